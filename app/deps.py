"""Per-request dependencies every controller may ask for by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from litestar import Request
from litestar._kwargs.cleanup import DependencyCleanupGroup
from litestar._kwargs.dependencies import resolve_dependency
from litestar._kwargs.kwargs_model import KwargsModel
from litestar.connection import ASGIConnection
from litestar.di import Provide

from app.auth import Principal, principal_of
from app.db import AsyncSession, ReadSession, session_scope
from app.uow import UnitOfWork

# Each takes the request, not `state: State`: Litestar builds a new State (a copy of the app's)
# for every dependency that asks for one, on every request.


async def provide_session(request: Request[Any, Any, Any]) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(request.app.state.sessionmaker):
        yield session


async def provide_reader(request: Request[Any, Any, Any]) -> AsyncIterator[ReadSession]:
    """A session for reads: takes no write lock (SQLite), no BEGIN/ROLLBACK trips (PostgreSQL)."""
    session: ReadSession = request.app.state.read_sessionmaker()
    try:
        yield session
    finally:
        # One that never began holds nothing: closing it (a greenlet and a task) would cost a
        # one-row read (driver_fetchrow borrows and returns its own) a tenth of its time.
        if session.in_transaction():
            await session.__aexit__(None, None, None)  # as `async with`: shielded from cancel


def provide_uow(request: Request[Any, Any, Any]) -> UnitOfWork:
    """The unit of work a writing use case opens (it commits; the route never does)."""
    return UnitOfWork(request.app.state.sessionmaker)


def provide_now(request: Request[Any, Any, Any]) -> datetime:
    """The one clock: services get `now` from here, never from the wall clock themselves."""
    now: datetime = request.app.state.clock()
    return now


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request)


DEPENDENCIES = {
    "session": Provide(provide_session),
    "reader": Provide(provide_reader),
    "uow": Provide(provide_uow, sync_to_thread=False),
    "now": Provide(provide_now, sync_to_thread=False),
    "principal": Provide(provide_principal, sync_to_thread=False),
}


async def _resolve_in_order(
    self: KwargsModel, connection: ASGIConnection[Any, Any, Any, Any], kwargs: dict[str, Any]
) -> DependencyCleanupGroup:
    cleanup_group = DependencyCleanupGroup()
    for batch in self.dependency_batches:
        for dependency in batch:
            await resolve_dependency(dependency, connection, kwargs, cleanup_group)
    return cleanup_group


# Litestar resolves a route's independent dependencies concurrently, in an anyio task group per
# request (litestar-org/litestar#4563): with two or more that costs a join about 15 % of its
# server CPU. Every dependency above only builds an object (no I/O until it is used), so nothing
# gains from concurrency: resolve them one after another, in Litestar's own order.
KwargsModel.resolve_dependencies = _resolve_in_order  # type: ignore[method-assign]

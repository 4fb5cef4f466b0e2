"""The unit of work: one use case, one transaction (kernel: imports no domain).

A use case opens it with `async with uow:`, does all its reads and writes through `uow.session`
(ledger operations included: they never commit), and calls `await uow.commit()` at the end.
Leaving the block without committing rolls everything back. Work that must only happen once the
transaction is durable (enqueueing a job, publishing an event) is registered with
`uow.after_commit(...)`; a use case that goes on after a refused step wraps that step in
`async with uow.savepoint():`.

PostgreSQL may still abort a transaction to break a deadlock or a serialization conflict; a use
case decorated with `@use_case` is then run again from the start, a bounded number of times, and
finally answered `ServiceBusy` (503). Since every money movement has an id derived from what it
pays for, a re-run cannot move money twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSessionTransaction

from app.db import AsyncSession, SessionMaker
from app.errors import ServiceBusy

log = structlog.get_logger("copool.uow")

#: SQLSTATEs after which the whole transaction may simply be run again.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
DEFAULT_ATTEMPTS = 4

P = ParamSpec("P")
T = TypeVar("T")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE the database answered with, if the error is its answer."""
    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return None
    for candidate in (exc.orig, exc.orig.__cause__):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return None


def is_retryable(exc: BaseException) -> bool:
    """Did the database abort this transaction only because of other transactions?"""
    return sqlstate(exc) in RETRYABLE_SQLSTATES


def commit_outcome_unknown(uow: UnitOfWork, exc: BaseException) -> bool:
    """Whether `exc`, raised in the unit of work's last `async with`, leaves its changes in doubt:
    the commit was sent and no answer of the database's says it was refused (a connection lost
    mid-COMMIT; an error the database answers, like a deferred check, means rolled back)."""
    return uow.may_have_committed and (
        sqlstate(exc) is None or getattr(exc, "connection_invalidated", False)
    )


class UnitOfWork:
    """A reusable transaction boundary: each `async with` opens a fresh session."""

    def __init__(self, sessionmaker: SessionMaker, *, attempts: int = DEFAULT_ATTEMPTS) -> None:
        self._sessionmaker = sessionmaker
        self.attempts = attempts
        self._session: AsyncSession | None = None
        self._committed = False
        self._commit_sent = False
        self._after_commit: list[Callable[[], Awaitable[Any]]] = []

    def fresh(self) -> UnitOfWork:
        """Another unit of work on the same database, for work beside the caller's own."""
        return UnitOfWork(self._sessionmaker, attempts=self.attempts)

    @property
    def engine(self) -> AsyncEngine:
        bind = self._sessionmaker.kw.get("bind")
        assert isinstance(bind, AsyncEngine), "the sessionmaker is bound to one engine"
        return bind

    @property
    def may_have_committed(self) -> bool:
        """Its last `async with` asked the database to commit: after an error there, whether
        the changes stand is unknown to this side (a connection lost mid-COMMIT)."""
        return self._commit_sent

    @property
    def on_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("the unit of work is not open: use `async with uow:`")
        return self._session

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError("this unit of work is already open")
        self._session = self._sessionmaker()
        self._committed = False
        self._commit_sent = False
        self._after_commit = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self.session, None
        try:
            if not self._committed and session.in_transaction():
                await session.rollback()
        finally:
            await session.close()
            self._after_commit = []

    async def commit(self) -> None:
        """Make every change of this use case durable, then run the after-commit callbacks."""
        self._commit_sent = True
        await self.session.commit()
        self._committed = True
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                await callback()
            except Exception as exc:  # the transaction stands; sweeps pick up what is missed
                log.warning("after-commit callback failed", callback=repr(callback), error=str(exc))

    def after_commit(
        self, fn: Callable[P, Awaitable[Any]], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Run `fn(*args, **kwargs)` once this unit of work has committed (never if it does not)."""
        self._after_commit.append(functools.partial(fn, *args, **kwargs))

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncSession]:
        """A session beside this unit of work in which every statement commits on its own
        (PostgreSQL autocommit: no BEGIN or COMMIT round trips): for reads that lock nothing,
        ending in at most one writing statement that checks them itself."""
        async with self.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            async with AsyncSession(bind=connection) as session:
                yield session

    def savepoint(self) -> AsyncSessionTransaction:
        """A nested transaction: `async with uow.savepoint():` undoes only its block on error."""
        return self.session.begin_nested()


def use_case(
    fn: Callable[Concatenate[UnitOfWork, P], Awaitable[T]],
) -> Callable[Concatenate[UnitOfWork, P], Awaitable[T]]:
    """Run the use case again when PostgreSQL aborted it for a deadlock or serialization
    failure; after `uow.attempts` tries, raise ServiceBusy."""

    @functools.wraps(fn)
    async def run(uow: UnitOfWork, /, *args: P.args, **kwargs: P.kwargs) -> T:
        attempt = 1
        while True:
            try:
                return await fn(uow, *args, **kwargs)
            except DBAPIError as exc:
                if not is_retryable(exc):
                    raise
                if attempt >= uow.attempts:
                    log.warning("use case kept conflicting; giving up", use_case=fn.__name__)
                    raise ServiceBusy("the database is busy; retry shortly") from exc
                log.info("use case conflicted; running it again", use_case=fn.__name__)
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 - jitter
                attempt += 1

    return run

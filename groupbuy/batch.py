"""Group commit of a pool's joins inside one process (PostgreSQL).

Every join of a pool changes the same two rows: the pool's row and its escrow account. One
transaction per join makes a flash crowd queue on those rows, each join holding them for its
round trips. Here the joins a process has admitted for a pool queue in memory instead; while one
batch is in the database the next gathers, and it takes everyone waiting (up to MAX_BATCH). A
lone join goes alone, so nothing waits for company. What a batch does is the runner's business
(groupbuy.service runs one unit of work per batch and answers each join on its own); if the
batch as a whole fails, every join in it is answered SINGLE: it goes the one-join path, where
its own error, if any, is its own (unless it failed at its commit: then whether its joins
stand is unknown, and each is answered 503, to be retried with its Idempotency-Key).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

import msgspec
import structlog

from app.errors import ServiceBusy

log = structlog.get_logger("copool.groupbuy.batch")

#: Joins of one pool in one transaction at most.
MAX_BATCH = 200


class Ticket(msgspec.Struct, frozen=True, kw_only=True):
    """One admitted join waiting for its batch."""

    user_id: UUID
    quantity: int
    request_id: str | None
    now: datetime


class OutcomeUnknown(Exception):
    """The batch failed once its commit was asked for, and nothing says it was refused: its
    joins may stand, so none of them may go the one-join path (a join without a request id
    would be made twice)."""


class JoinOutcomeUnknown(ServiceBusy):
    """The answer (503) of each join of such a batch."""


class Fallback(Enum):
    #: Not decided in the batch: take the one-join path.
    SINGLE = "single"


Runner = Callable[[list[Ticket]], Awaitable[list[Any]]]
_Pending = tuple[Ticket, "asyncio.Future[Any]"]


class JoinQueue:
    """The waiting joins of one pool in this process and event loop."""

    def __init__(self) -> None:
        self._waiting: list[_Pending] = []
        self._draining = False

    async def submit(self, ticket: Ticket, run: Runner) -> Any:
        """Wait for the batch that takes this join; answers what the runner said for it."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((ticket, future))
        if not self._draining:
            self._draining = True
            asyncio.create_task(self._drain(run))  # noqa: RUF006 - it ends when the queue does
        return await future

    async def _drain(self, run: Runner) -> None:
        batch: list[_Pending] = []
        try:
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                try:
                    answers = await run([ticket for ticket, _ in batch])
                except OutcomeUnknown as exc:
                    log.warning("join batch failed at its commit", error=repr(exc.__cause__))
                    answers = [
                        JoinOutcomeUnknown("the join may have been made; retry it with its key")
                        for _ in batch
                    ]
                except Exception as exc:
                    log.warning("join batch failed; its joins go one by one", error=repr(exc))
                    answers = [Fallback.SINGLE] * len(batch)
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._draining = False
            for _, future in batch:  # cancelled mid-batch: nobody is left waiting forever
                if not future.done():  # (it may have committed: a retry with its key tells)
                    future.set_exception(ServiceBusy("the join was interrupted; retry it"))


_queues: weakref.WeakValueDictionary[tuple[int, int, UUID], JoinQueue] = (
    weakref.WeakValueDictionary()
)


def queue_for(database: object, pool_id: UUID) -> JoinQueue:
    """The queue of this pool on this database (an engine) and the running event loop."""
    key = (id(asyncio.get_running_loop()), id(database), pool_id)
    queue = _queues.get(key)
    if queue is None:
        queue = JoinQueue()
        _queues[key] = queue
    return queue

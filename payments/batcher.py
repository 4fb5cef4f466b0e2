"""Group commit on PostgreSQL: concurrent single ledger calls of a process share one statement.

While one batch is in the database, new calls queue; the next batch takes all of them (up to
MAX_BATCH). A lone call goes alone, so nothing waits for company: latency stays one round trip,
and under load the per-call cost of a statement and a commit is shared. Two operations batch
this way: staging transfers and resolving holds (payments/postgres.py names the statements).
Each element succeeds or fails on its own: the functions answer an outcome per element, and if
the statement as a whole fails, each element is run alone so one bad element fails only itself.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

MAX_BATCH = 256
RETRIES = 3
RETRYABLE = {"40P01", "40001"}  # deadlock detected, serialization failure


@dataclass(frozen=True)
class BatchedCall:
    """A batch function: the SQL that calls it with one array per column."""

    sql: str
    columns: tuple[str, ...]


Pending = tuple[dict[str, Any], "asyncio.Future[tuple[str, Any]]"]


class Batcher:
    """One per engine, call and event loop; answers (outcome, row) for each submitted call."""

    def __init__(self, engine: AsyncEngine, call: BatchedCall) -> None:
        self._engine = engine
        self._call = call
        self._queue: list[Pending] = []
        self._draining = False

    async def submit(self, values: dict[str, Any]) -> tuple[str, Any]:
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((values, future))
        if not self._draining:
            self._draining = True
            asyncio.create_task(self._drain())  # noqa: RUF006 - it ends when the queue is empty
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._answer(batch)
        finally:
            self._draining = False

    async def _answer(self, batch: list[Pending]) -> None:
        try:
            answers = await self._execute([values for values, _ in batch])
        except DBAPIError as exc:
            if len(batch) > 1:  # find the element at fault: alone, it fails only itself
                for pending in batch:
                    await self._answer([pending])
                return
            self._fail(batch, exc)
            return
        except Exception as exc:
            self._fail(batch, exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    @staticmethod
    def _fail(batch: list[Pending], exc: Exception) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def _execute(self, batch: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        params = tuple([values[column] for values in batch] for column in self._call.columns)
        for attempt in range(1, RETRIES + 1):
            try:
                async with self._engine.connect() as connection:
                    autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                    result = await autocommit.exec_driver_sql(self._call.sql, params)
                    return [(row["outcome"], row) for row in result.mappings().all()]
            except DBAPIError as exc:
                # The batch is one statement: when PostgreSQL aborts it to break a deadlock
                # (a rare race of one id on two paths), nothing of it was kept.
                cause = exc.orig.__cause__ if exc.orig is not None else None
                if getattr(cause, "sqlstate", None) not in RETRYABLE or attempt == RETRIES:
                    raise
        raise AssertionError("unreachable")


_batchers: weakref.WeakKeyDictionary[Any, dict[tuple[int, str], Batcher]] = (
    weakref.WeakKeyDictionary()
)


def batcher_for(engine: AsyncEngine, call: BatchedCall) -> Batcher:
    """The batcher of this engine and call on the running event loop."""
    per_loop = _batchers.setdefault(engine.sync_engine, {})
    key = (id(asyncio.get_running_loop()), call.sql)
    if key not in per_loop:
        per_loop[key] = Batcher(engine, call)
    return per_loop[key]

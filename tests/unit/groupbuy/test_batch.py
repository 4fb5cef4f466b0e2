"""The group commit's queue (pure asyncio, no I/O): a batch that fails before its commit sends
its joins down the one-join path; one whose outcome is unknown answers each join 503 instead,
so no join is made twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from app.errors import ServiceBusy
from groupbuy.batch import Fallback, JoinOutcomeUnknown, JoinQueue, OutcomeUnknown, Ticket

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def ticket() -> Ticket:
    return Ticket(user_id=uuid.uuid4(), quantity=1, request_id=None, now=NOW)


async def crowd(fails_with: Exception) -> list[Any]:
    queue = JoinQueue()
    calls: list[int] = []

    async def run(tickets: list[Ticket]) -> list[Any]:
        calls.append(len(tickets))
        await asyncio.sleep(0)
        raise fails_with

    answers = await asyncio.gather(
        *(queue.submit(ticket(), run) for _ in range(5)), return_exceptions=True
    )
    assert sum(calls) == 5  # every join was in exactly one batch
    return answers


async def test_a_batch_failing_before_its_commit_sends_its_joins_one_by_one() -> None:
    assert await crowd(RuntimeError("lost connection")) == [Fallback.SINGLE] * 5


async def test_a_batch_failing_at_its_commit_answers_every_join_busy() -> None:
    answers = await crowd(OutcomeUnknown())
    assert all(isinstance(answer, JoinOutcomeUnknown) for answer in answers), answers
    assert all(isinstance(answer, ServiceBusy) for answer in answers)  # a 503
    assert len({id(answer) for answer in answers}) == 5  # each raised by its own request

"""Trust's arq jobs, gathered by workers/settings.py: thin, idempotent, on the worker's clock."""

from __future__ import annotations

from typing import Any

import structlog
from arq.cron import CronJob, cron

from app.uow import UnitOfWork
from trust import service

log = structlog.get_logger("copool.trust.jobs")


async def reveal_ratings(ctx: dict[str, Any]) -> int:
    """Reveal every rating whose window closed without an answer, and count it in reputation."""
    now = ctx["clock"]()
    total = 0
    while revealed := await service.reveal_due_ratings(UnitOfWork(ctx["sessionmaker"]), now=now):
        total += revealed
    if total:
        log.info("revealed ratings", count=total)
    return total


RELEASE_BATCH = 200


async def release_deposits(ctx: dict[str, Any]) -> int:
    """Give back deposits whose complaint window closed with no complaint open against them."""
    now = ctx["clock"]()
    total = 0
    while True:
        async with UnitOfWork(ctx["sessionmaker"]) as uow:
            released = await service.release_due_deposits(uow.session, now=now, limit=RELEASE_BATCH)
            await uow.commit()
        total += released
        if released < RELEASE_BATCH:
            break
    if total:
        log.info("released deposits", count=total)
    return total


#: Jobs enqueued by name after a unit of work commits.
FUNCTIONS: list[Any] = [reveal_ratings, release_deposits]
#: Periodic sweeps, each idempotent.
SWEEPS: list[CronJob] = [
    cron(reveal_ratings, second={40}, unique=True, timeout=120),
    cron(release_deposits, second={45}, unique=True, timeout=300),
]

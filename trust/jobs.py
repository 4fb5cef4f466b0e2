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


#: Jobs enqueued by name after a unit of work commits.
FUNCTIONS: list[Any] = [reveal_ratings]
#: Periodic sweeps, each idempotent.
SWEEPS: list[CronJob] = [cron(reveal_ratings, second={40}, unique=True, timeout=120)]

"""Groupbuy's arq jobs, gathered by workers/settings.py: thin, idempotent, on the worker's clock.

A pool's settlement is enqueued once its unit of work commits, deferred to its deadline (or now,
when it filled, was closed or was cancelled); the sweep settles whatever a lost job, a Redis restart
or a crashed worker left. Both may run at once: settlement is idempotent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import structlog
from arq.connections import ArqRedis
from arq.cron import CronJob, cron

from app.uow import UnitOfWork
from groupbuy import service

log = structlog.get_logger("copool.groupbuy.jobs")
#: Pools settled per sweep run (the next run takes the rest).
SWEEP_BATCH = 50


def scheduler(redis: ArqRedis) -> service.Scheduler:
    """Enqueue `settle_pool` for a pool at a time; the job id carries the time, so a later
    schedule (closed early) is not swallowed by arq's de-duplication of the deadline's job."""

    async def schedule(pool_id: UUID, at: datetime) -> None:
        await redis.enqueue_job(
            "settle_pool",
            str(pool_id),
            _job_id=f"settle-pool:{pool_id}:{int(at.timestamp())}",
            _defer_until=at,
        )

    return schedule


async def settle_pool(ctx: dict[str, Any], pool_id: str) -> str:
    """Settle one pool (decide it if due, charge or release its joins, pay the organizer)."""
    pool = await service.settle_pool(
        UnitOfWork(ctx["sessionmaker"]),
        pool_id=UUID(pool_id),
        config=ctx["settings"].trust(),
        now=ctx["clock"](),
    )
    log.info("settled pool", pool_id=pool_id, status=pool.status, settled=bool(pool.settled_at))
    return pool.status


async def settle_due_pools(ctx: dict[str, Any]) -> int:
    """Sweep: settle every pool past its deadline or decided but not yet settled."""
    now = ctx["clock"]()
    async with ctx["sessionmaker"]() as session:
        due = await service.due_pools(session, now=now, limit=SWEEP_BATCH)
    for pool_id in due:
        try:
            await service.settle_pool(
                UnitOfWork(ctx["sessionmaker"]),
                pool_id=pool_id,
                config=ctx["settings"].trust(),
                now=now,
            )
        except Exception:  # one pool that keeps failing must not stop the others' settlement
            log.exception("settling a pool failed; the sweep goes on", pool_id=str(pool_id))
            try:
                await service.note_settle_attempt(
                    UnitOfWork(ctx["sessionmaker"]), pool_id=pool_id, now=now
                )
            except Exception:  # (the same fault, most likely: the next sweep tries again)
                log.exception("noting the failed settlement failed", pool_id=str(pool_id))
    if due:
        log.info("swept pools", count=len(due))
    return len(due)


#: Jobs enqueued by name after a unit of work commits.
FUNCTIONS: list[Any] = [settle_pool, settle_due_pools]
#: Periodic sweeps, each idempotent.
SWEEPS: list[CronJob] = [cron(settle_due_pools, second={25}, unique=True, timeout=600)]

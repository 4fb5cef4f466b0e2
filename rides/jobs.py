"""Rides' arq jobs, gathered by workers/settings.py: thin, idempotent, on the worker's clock.

A new offer or request (or a declined proposal) enqueues a matching run deferred to the end of
the current window (COPOOL_RIDE_MATCH_WINDOW_S), with a job id per window: everything arriving
within a window is matched together, by the batch solver, region by region. A sweep every 30 s
matches what a lost job left, expires proposals, closes departed offers and expires requests
whose window passed. Every run is safe to repeat or overlap (rows locked, statuses conditional).
"""

from __future__ import annotations

import math
import time
from typing import Any

import structlog
from arq.connections import ArqRedis
from arq.cron import CronJob, cron

from app.uow import UnitOfWork
from rides import service
from rides.config import ride_config

log = structlog.get_logger("copool.rides.jobs")


def scheduler(redis: ArqRedis, window_s: float) -> service.Scheduler:
    """Enqueue one `match_rides` per window, at its end (arq drops the window's duplicates)."""

    async def schedule() -> None:
        window = max(window_s, 0.001)
        end = math.ceil(time.time() / window) * window
        await redis.enqueue_job(
            "match_rides", _job_id=f"match-rides:{end:.3f}", _defer_by=max(0.0, end - time.time())
        )

    return schedule


async def match_rides(ctx: dict[str, Any]) -> int:
    """Match every region with open requests; answers the proposals made."""
    config = ride_config(ctx["settings"])
    now = ctx["clock"]()
    async with ctx["sessionmaker"]() as session:
        regions = await service.regions_to_match(session, now=now)
    made = 0
    for region in regions:
        made += await service.match_region(
            UnitOfWork(ctx["sessionmaker"]), region=region, config=config, now=now
        )
    if made:
        log.info("proposed rides", proposals=made, regions=len(regions))
    return made


async def expire_rides(ctx: dict[str, Any]) -> int:
    """Sweep: expire proposals, close departed offers, expire requests whose window passed."""
    return await service.expire_due(UnitOfWork(ctx["sessionmaker"]), now=ctx["clock"]())


async def sweep_rides(ctx: dict[str, Any]) -> int:
    await expire_rides(ctx)
    return await match_rides(ctx)


#: Jobs enqueued by name after a unit of work commits.
FUNCTIONS: list[Any] = [match_rides, expire_rides]
#: Periodic sweeps, each idempotent.
SWEEPS: list[CronJob] = [cron(sweep_rides, second={10, 40}, unique=True, timeout=300)]

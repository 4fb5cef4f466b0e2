"""Rides' arq jobs, gathered by workers/settings.py: thin, idempotent, on the worker's clock.

A new offer or request (or a declined proposal) enqueues a matching run deferred to the end of
the current window (COPOOL_RIDE_MATCH_WINDOW_S), with a job id per window: everything arriving
within a window is matched together, by the batch solver, region by region (an h3 cell and its
neighbours; neighbouring regions with requests form one batch), each batch a job of its own, so
that workers on several machines match regions apart at once. Each matching run
and each expiry run enqueues the next expiry run at the moment something next falls due (a
proposal's expiry, an offer's departure, a request's window), with a job id per moment; an
expiry run that sent requests back to matching enqueues a matching run. A sweep every 30 s does
all of it for whatever a lost job left. Every run is safe to repeat or overlap (rows locked,
statuses conditional).
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import Any

import structlog
from arq.connections import ArqRedis
from arq.cron import CronJob, cron

from app.uow import UnitOfWork
from rides import service
from rides.config import ride_config

log = structlog.get_logger("copool.rides.jobs")
#: Unfinished rides ended per expiry run (the next run takes the rest).
UNFINISHED_BATCH = 200


def scheduler(redis: ArqRedis, window_s: float) -> service.Scheduler:
    """Enqueue one `match_rides` per window, at its end (arq drops the window's duplicates)."""

    async def schedule() -> None:
        window = max(window_s, 0.001)
        end = math.ceil(time.time() / window) * window
        await redis.enqueue_job(
            "match_rides", _job_id=f"match-rides:{end:.3f}", _defer_by=max(0.0, end - time.time())
        )

    return schedule


async def schedule_expiry(ctx: dict[str, Any], *, now: datetime) -> datetime | None:
    """Enqueue `expire_rides` at the moment something next falls due (none without Redis in
    ctx, as in tests that call jobs directly); answers that moment."""
    redis: ArqRedis | None = ctx.get("redis")
    async with ctx["sessionmaker"]() as session:
        due = await service.next_due(session, now=now)
    if redis is None or due is None:
        return due
    # Never the running job's own second: arq drops a job whose id is still in progress.
    at = max(due, now + timedelta(seconds=1))
    await redis.enqueue_job(
        "expire_rides", _job_id=f"expire-rides:{int(at.timestamp())}", _defer_until=at
    )
    return at


async def match_rides(ctx: dict[str, Any]) -> int:
    """Hand the regions with open requests, grouped with their neighbours
    (`service.region_clusters`), each group to a `match_ride_regions` job of its own, so that
    several workers match groups apart at once (job ids per group and per run: a group is queued
    once a run). Without a queue in ctx (tests that call jobs directly) the groups are matched
    here, one after another. Answers the proposals made here."""
    now = ctx["clock"]()
    async with ctx["sessionmaker"]() as session:
        clusters = service.region_clusters(await service.regions_to_match(session, now=now))
    redis: ArqRedis | None = ctx.get("redis")
    if redis is not None:
        run = ctx.get("job_id") or f"{now.timestamp():.3f}"
        for regions in clusters:
            await redis.enqueue_job(
                "match_ride_regions", regions, _job_id=f"match-regions:{regions[0]}:{run}"
            )
        await schedule_expiry(ctx, now=now)
        return 0
    made = 0
    for regions in clusters:
        made += await match_ride_regions(ctx, regions)
    return made


async def match_ride_regions(ctx: dict[str, Any], regions: list[str]) -> int:
    """One batch of a group of neighbouring regions (their open requests, the open offers of
    them and their neighbours); then the expiry run is enqueued for the first proposal to
    expire. Answers the proposals made."""
    now = ctx["clock"]()
    made = await service.match_regions(
        UnitOfWork(ctx["sessionmaker"]),
        regions=regions,
        config=ride_config(ctx["settings"]),
        now=now,
    )
    if made:
        log.info("proposed rides", proposals=made, regions=regions)
        await schedule_expiry(ctx, now=now)
    return made


async def expire_rides(ctx: dict[str, Any]) -> int:
    """Expire proposals, close departed offers, expire requests whose window passed, end rides
    never completed whose fare hold lapsed; then match the requests that went back to matching,
    and enqueue the next expiry run."""
    now = ctx["clock"]()
    changed = await service.expire_due(UnitOfWork(ctx["sessionmaker"]), now=now)
    async with ctx["sessionmaker"]() as session:
        unfinished = await service.unfinished_rides(session, now=now, limit=UNFINISHED_BATCH)
    for match_id in unfinished:  # each its own unit of work: one that fails stops no other
        try:
            await service.end_unfinished(
                UnitOfWork(ctx["sessionmaker"]), match_id=match_id, now=now
            )
        except Exception:
            log.exception("ending an unfinished ride failed", match_id=str(match_id))
    redis: ArqRedis | None = ctx.get("redis")
    if changed and redis is not None:
        await scheduler(redis, ctx["settings"].ride_match_window_s)()
    await schedule_expiry(ctx, now=now)
    return changed


async def sweep_rides(ctx: dict[str, Any]) -> int:
    await expire_rides(ctx)
    return await match_rides(ctx)


#: Jobs enqueued by name after a unit of work commits.
FUNCTIONS: list[Any] = [match_rides, match_ride_regions, expire_rides]
#: Periodic sweeps, each idempotent.
SWEEPS: list[CronJob] = [cron(sweep_rides, second={10, 40}, unique=True, timeout=300)]

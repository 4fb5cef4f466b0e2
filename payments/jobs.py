"""Payments' arq jobs: thin and idempotent, each calling a use case with the worker's clock."""

from __future__ import annotations

from typing import Any

import structlog
from arq.cron import CronJob, cron

from app.uow import UnitOfWork
from payments import chain_writer, service

log = structlog.get_logger("copool.payments.jobs")


async def expire_holds(ctx: dict[str, Any]) -> int:
    """Release every pending hold past its expiry (status `expired`)."""
    now = ctx["clock"]()
    total = 0
    while expired := await service.expire_due_holds(UnitOfWork(ctx["sessionmaker"]), now=now):
        total += expired
    if total:
        log.info("expired holds", count=total)
    return total


async def chain_ledger(ctx: dict[str, Any]) -> int:
    """Sweep: chain whatever committed entries the app processes have not chained yet."""
    chained = await chain_writer.chain_all(ctx["sessionmaker"])
    if chained:
        log.info("chained ledger entries", count=chained)
    return chained


#: A withdrawal sweep stops asking after this long (its job's timeout is 120 s); the next one,
#: half a minute later, goes on from there.
SETTLE_WITHDRAWALS_BUDGET_S = 60.0


async def settle_withdrawals(ctx: dict[str, Any]) -> int:
    """Ask the provider about withdrawals whose outcome was unknown; capture or void them."""
    decided = await service.settle_withdrawals(
        UnitOfWork(ctx["sessionmaker"]),
        provider=ctx["funding"],
        now=ctx["clock"](),
        place=ctx.setdefault("withdrawal_sweep_place", service.SweepPlace()),
        budget_s=SETTLE_WITHDRAWALS_BUDGET_S,
    )
    if decided:
        log.info("settled withdrawals", count=decided)
    return decided


#: Jobs enqueued by name after a unit of work commits.
FUNCTIONS: list[Any] = [expire_holds, chain_ledger, settle_withdrawals]
#: Periodic sweeps, each idempotent: anything a crashed job missed is picked up next time.
SWEEPS: list[CronJob] = [
    cron(expire_holds, second={5, 35}, unique=True, timeout=120),
    cron(chain_ledger, second=set(range(0, 60, 10)), unique=True, timeout=120),
    cron(settle_withdrawals, second={20, 50}, unique=True, timeout=120),
]

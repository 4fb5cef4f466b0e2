"""arq job functions: thin, idempotent, each calling a service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.idempotency import purge_expired_keys
from payments import service as payments

HEARTBEAT_KEY = "copool:worker:heartbeat"
HEARTBEAT_TTL_S = 24 * 3600


async def heartbeat(ctx: dict[str, Any]) -> str:
    """Record that a worker is alive (shown by /v1/health)."""
    beat = datetime.now(UTC).isoformat()
    await ctx["redis"].set(HEARTBEAT_KEY, beat, ex=HEARTBEAT_TTL_S)
    return beat


async def expire_holds(ctx: dict[str, Any]) -> int:
    """Void every pending hold past its expiry (status `expired`)."""
    now = datetime.now(UTC)
    total = 0
    async with ctx["sessionmaker"]() as session:
        while expired := await payments.expire_due_holds(session, now=now):
            total += expired
    return total


async def chain_ledger(ctx: dict[str, Any]) -> int:
    """Sweep: chain whatever committed entries the app processes have not chained yet."""
    async with ctx["sessionmaker"]() as session:
        return await payments.chain_all(session)


async def purge_idempotency_keys(ctx: dict[str, Any]) -> int:
    """Forget Idempotency-Keys older than their 24-hour life."""
    return await purge_expired_keys(ctx["sessionmaker"], datetime.now(UTC))

"""The app's own arq jobs (heartbeat, key purge); each domain keeps its jobs in <domain>/jobs.py."""

from __future__ import annotations

from typing import Any

import structlog

from app.idempotency import purge_expired_keys

log = structlog.get_logger("copool.jobs")

HEARTBEAT_KEY = "copool:worker:heartbeat"
HEARTBEAT_TTL_S = 24 * 3600


async def heartbeat(ctx: dict[str, Any]) -> str:
    """Record that a worker is alive (shown by /v1/health)."""
    beat: str = ctx["clock"]().isoformat()
    await ctx["redis"].set(HEARTBEAT_KEY, beat, ex=HEARTBEAT_TTL_S)
    return beat


async def purge_idempotency_keys(ctx: dict[str, Any]) -> int:
    """Forget Idempotency-Keys older than their 24-hour life."""
    purged = await purge_expired_keys(ctx["sessionmaker"], ctx["clock"]())
    if purged:
        log.info("forgot old Idempotency-Keys", count=purged)
    return purged

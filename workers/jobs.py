"""arq job functions: thin, idempotent, each calling a service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

HEARTBEAT_KEY = "copool:worker:heartbeat"
HEARTBEAT_TTL_S = 24 * 3600


async def heartbeat(ctx: dict[str, Any]) -> str:
    """Record that a worker is alive (shown by /v1/health)."""
    beat = datetime.now(UTC).isoformat()
    await ctx["redis"].set(HEARTBEAT_KEY, beat, ex=HEARTBEAT_TTL_S)
    return beat

"""The background chain writer each app process runs: chains committed entries in batches."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.exc import SQLAlchemyError

from app.db import SessionMaker
from payments.service import CHAIN_BATCH, chain_pending

log = structlog.get_logger("copool.ledger")


async def run_sequencer(sessionmaker: SessionMaker, *, interval_s: float) -> None:
    """Forever: chain what is committed; sleep `interval_s` when caught up (or on an error)."""
    while True:
        try:
            async with sessionmaker() as session:
                chained = await chain_pending(session, limit=CHAIN_BATCH)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("ledger chaining failed; will retry", error=str(exc))
            chained = 0
        if chained < CHAIN_BATCH:
            await asyncio.sleep(interval_s)

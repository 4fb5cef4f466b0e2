"""Waiting, in PostgreSQL concurrency tests, until other transactions are blocked on row locks."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text

from app.db import SessionMaker

WAITERS = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


async def lock_waiters(sessionmaker: SessionMaker, count: int, *, timeout_s: float = 10.0) -> None:
    """Return once at least `count` sessions of this database wait for a lock; fail after
    `timeout_s` (the use case under test never reached the lock it should wait for)."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with sessionmaker() as session:
            waiting = (await session.execute(WAITERS)).scalar_one()
        if waiting >= count:
            return
        assert time.monotonic() < deadline, f"{waiting} of {count} sessions wait for a lock"
        await asyncio.sleep(0.02)

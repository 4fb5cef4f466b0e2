"""Real PostgreSQL and Redis for the tests: a fresh database per session, a flushed Redis db.

Where a server is not reachable the tests that need it skip with a loud reason, unless
COPOOL_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
import redis

from app.db import create_engine
from app.migrate import upgrade

T = TypeVar("T")

POSTGRES_ADMIN_DSN = os.environ.get(
    "COPOOL_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Tests flush their Redis database; runs side by side (two checkouts, CI beside a developer) each
# take one of databases 8-15 by process id, so they rarely share one.
REDIS_TEST_URL = os.environ.get(
    "COPOOL_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{8 + os.getpid() % 8}"
)
REQUIRE_SERVICES = os.environ.get("COPOOL_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip loudly, or fail when the run requires every service."""
    message = f"SERVICE UNAVAILABLE: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (COPOOL_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


def _with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


class PostgresDatabase:
    """A throw-away database on the test server, migrated to head."""

    def __init__(self) -> None:
        self.name = f"copool_test_{uuid.uuid4().hex[:12]}"
        self.dsn = _with_database(POSTGRES_ADMIN_DSN, self.name)
        self.url = self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create(self) -> None:
        await self._admin(f'CREATE DATABASE "{self.name}"')

    async def drop(self) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def migrate(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def sqlite_url(directory: str | None = None) -> str:
    path = Path(directory or tempfile.mkdtemp(prefix="copool-test-")) / "copool.db"
    return f"sqlite+aiosqlite:///{path}"


def flushed_redis(url: str = REDIS_TEST_URL) -> str:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.flushdb()
        client.close()
    except redis.RedisError as exc:
        unavailable(f"Redis at {url}: {exc}")
    return url


async def on_a_new_postgres_database(run: Callable[[str], Awaitable[T]]) -> T:
    """`run(url)` on a PostgreSQL database of its own (empty: not migrated), dropped afterwards;
    the test is skipped as unavailable where PostgreSQL is not."""
    database = PostgresDatabase()
    try:
        await database.create()
    except Exception as exc:
        unavailable(f"PostgreSQL: {exc}")
    try:
        return await run(database.url)
    finally:
        await database.drop()

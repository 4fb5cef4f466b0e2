"""Worlds for ride tests: `world` (the shared database of each backend), `own_world` (a database
of the test's own, each backend: for jobs that look at every row), `pg_world` (PostgreSQL only,
for concurrency)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from app.db import create_engine, create_sessionmaker
from app.main import create_app
from tests.conftest import make_settings
from tests.support.trust import MovableClock, TrustWorld, world

__all__ = ["own_world", "pg_world", "world"]


async def _world(database_url: str, redis_url: str) -> AsyncIterator[TrustWorld]:
    engine = create_engine(database_url)
    clock = MovableClock()
    app = create_app(make_settings(database_url, redis_url), clock=clock)
    try:
        async with AsyncTestClient(app=app) as client:
            yield TrustWorld(client=client, sessionmaker=create_sessionmaker(engine), clock=clock)
    finally:
        await engine.dispose()


@pytest.fixture
async def own_world(fresh_database_url: str, redis_url: str) -> AsyncIterator[TrustWorld]:
    async for made in _world(fresh_database_url, redis_url):
        yield made


@pytest.fixture
async def pg_world(postgres_url: str, redis_url: str) -> AsyncIterator[TrustWorld]:
    async for made in _world(postgres_url, redis_url):
        yield made

"""Fixtures shared by every integration test: a migrated database per backend, real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import SessionMaker, create_engine, create_sessionmaker
from app.main import create_app
from app.settings import Env, Settings
from tests.support.services import PostgresDatabase, flushed_redis, migrate, sqlite_url, unavailable

# `make test` runs the "ci" profile: derandomized, so a run is repeatable on any machine, with no
# example database (a fresh clone has none either). `make fuzz` runs "fuzz": random and long.
hypothesis_settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
hypothesis_settings.register_profile(
    "fuzz",
    max_examples=2_000,
    stateful_step_count=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def _postgres_database() -> Iterator[PostgresDatabase | str]:
    database = PostgresDatabase()
    try:
        asyncio.run(database.create())
    except Exception as exc:
        yield f"PostgreSQL at {database.dsn.rpartition('/')[0]}: {exc}"
        return
    asyncio.run(migrate(database.url))
    yield database
    asyncio.run(database.drop())


@pytest.fixture(scope="session")
def _sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = sqlite_url(str(tmp_path_factory.mktemp("sqlite")))
    asyncio.run(migrate(url))
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated database, once per backend."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("_sqlite_database")
        return url
    database = request.getfixturevalue("_postgres_database")
    if isinstance(database, str):
        unavailable(database)
    return str(database.url)


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only: for concurrency tests, where SQLite's single writer proves nothing."""
    database = request.getfixturevalue("_postgres_database")
    if isinstance(database, str):
        unavailable(database)
    return str(database.url)


@pytest.fixture
def redis_url() -> str:
    return flushed_redis()


def make_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_url_explicit": True,
        "secret_key": TEST_SECRET,
        "env": Env.TEST,
        "login_limit_per_ip": 10_000,
        "login_limit_per_email": 10_000,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[SessionMaker]:
    """Sessions on the shared migrated database of this backend, for service-level tests."""
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of its own, migrated, for tests that break or count the whole ledger."""
    if request.param == "sqlite":
        url = sqlite_url(str(tmp_path))
        await migrate(url)
        yield url
        return
    database = PostgresDatabase()
    try:
        await database.create()
    except Exception as exc:
        unavailable(f"PostgreSQL: {exc}")
    await migrate(database.url)
    yield database.url
    await database.drop()


@pytest.fixture
async def fresh_engine(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a database of the test's own (see fresh_database_url)."""
    engine = create_engine(fresh_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def fresh_pg_sessions() -> AsyncIterator[SessionMaker]:
    """Sessions on a PostgreSQL database of the test's own (for whole-ledger counts)."""
    database = PostgresDatabase()
    try:
        await database.create()
    except Exception as exc:
        unavailable(f"PostgreSQL: {exc}")
    await migrate(database.url)
    engine = create_engine(database.url, pool_size=40)
    yield create_sessionmaker(engine)
    await engine.dispose()
    await database.drop()


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database of the test's own, for synchronous tests."""
    database = PostgresDatabase()
    try:
        asyncio.run(database.create())
    except Exception as exc:
        unavailable(f"PostgreSQL: {exc}")
    asyncio.run(migrate(database.url))
    yield database.url
    asyncio.run(database.drop())

"""A database that accepts connections but never answers costs seconds, not minutes: 503."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import get
from litestar.di import NamedDependency
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from app.db import AsyncSession
from app.main import create_app
from tests.conftest import make_settings
from tests.support.users import assert_problem, unique_email


@pytest.fixture
async def silent_database() -> AsyncIterator[str]:
    """A TCP server that accepts every connection and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/copool"
    for writer in held:
        writer.close()
    server.close()


async def test_a_silent_database_is_a_503_within_seconds(
    silent_database: str, redis_url: str
) -> None:
    settings = make_settings(silent_database, redis_url, db_connect_timeout_s=1)
    async with AsyncTestClient(app=create_app(settings), timeout=30) as client:
        started = time.monotonic()
        response = await client.post(
            "/v1/auth/register",
            json={"email": unique_email(), "password": "correct horse", "display_name": "A"},
        )
        elapsed = time.monotonic() - started
    assert_problem(response, 503, "service-unavailable")
    assert response.headers["retry-after"]
    assert elapsed < 5


async def test_a_statement_past_its_timeout_is_a_503(postgres_url: str, redis_url: str) -> None:
    settings = make_settings(postgres_url, redis_url, db_statement_timeout_s=1)
    app: Any = create_app(settings)

    @get("/v1/test/slow", opt={"exclude_from_auth": True})
    async def slow(session: NamedDependency[AsyncSession]) -> dict[str, int]:
        await session.execute(text("SELECT pg_sleep(5)"))
        return {"slept": 5}

    app.register(slow)
    async with AsyncTestClient(app=app, timeout=30) as client:
        started = time.monotonic()
        response = await client.get("/v1/test/slow")
        elapsed = time.monotonic() - started
    assert_problem(response, 503, "service-unavailable")
    assert elapsed < 4

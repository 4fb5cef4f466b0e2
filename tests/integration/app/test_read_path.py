"""The read path: GETs take no write lock, tokens are verified once, the pool does not churn."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar.security.jwt import Token
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from app.auth import DECODED_TOKENS, DecodedTokens
from app.db import create_engine
from app.main import create_app
from tests.conftest import make_settings
from tests.support.services import migrate, sqlite_url
from tests.support.users import assert_problem, sign_up


async def test_a_wallet_read_and_its_auth_complete_while_another_connection_holds_the_write_lock(
    tmp_path: Path, redis_url: str
) -> None:
    url = sqlite_url(str(tmp_path))
    await migrate(url)
    # No auth cache: every request also reads the caller's row, and must not wait either.
    settings = make_settings(url, redis_url, auth_cache_ttl_s=0)
    async with AsyncTestClient(app=create_app(settings)) as client:
        _, headers = await sign_up(client)
        writer = sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            # A GET that waited for the write lock would wait out the 30 s busy timeout.
            response = await asyncio.wait_for(client.get("/v1/wallet", headers=headers), 5)
            assert response.status_code == 200, response.text
        finally:
            writer.execute("ROLLBACK")
            writer.close()


async def test_a_tampered_or_expired_token_is_refused_though_its_twin_was_verified(
    client: AsyncTestClient[Any],
) -> None:
    _, headers = await sign_up(client)
    assert (await client.get("/v1/wallet", headers=headers)).status_code == 200
    token = headers["Authorization"].removeprefix("Bearer ")
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    for forged in (f"{header}.{payload}.{flipped}", f"{header}.{payload}x.{signature}"):
        response = await client.get("/v1/wallet", headers={"Authorization": f"Bearer {forged}"})
        assert_problem(response, 401, "unauthorized")
    assert (await client.get("/v1/wallet", headers=headers)).status_code == 200


def test_a_verified_token_is_forgotten_once_it_expires() -> None:
    now = [1_000_000.0]
    tokens = DecodedTokens(clock=lambda: now[0])
    exp = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=60)
    token = Token(exp=exp, sub="someone")
    now[0] = exp.timestamp() - 1
    tokens.put("secret", "encoded", token)
    assert tokens.get("secret", "encoded") is token
    assert tokens.get("another secret", "encoded") is None
    now[0] = exp.timestamp()  # PyJWT: expired once exp <= now
    assert tokens.get("secret", "encoded") is None
    now[0] = exp.timestamp() - 1
    assert tokens.get("secret", "encoded") is None  # dropped, not kept for later


def test_decoded_tokens_are_bounded() -> None:
    tokens = DecodedTokens(max_entries=2, clock=lambda: 0.0)
    token = Token(exp=datetime.now(UTC) + timedelta(minutes=1), sub="someone")
    for encoded in ("a", "b", "c"):
        tokens.put("secret", encoded, token)
    assert tokens.get("secret", "a") is None
    assert tokens.get("secret", "c") is token
    assert DECODED_TOKENS is not tokens


async def test_connections_opened_under_a_burst_are_kept_up_to_twice_the_pool_size(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url, pool_size=2)
    held = asyncio.Event()
    try:

        async def hold() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                await held.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(5)]
        await asyncio.sleep(0.5)
        assert engine.pool.checkedout() == 4  # type: ignore[attr-defined]  # the fifth waits
        held.set()
        await asyncio.gather(*tasks)
        # Every connection opened stays in the pool: the next burst opens none.
        assert engine.pool.checkedin() == 4  # type: ignore[attr-defined]
    finally:
        held.set()
        await engine.dispose()

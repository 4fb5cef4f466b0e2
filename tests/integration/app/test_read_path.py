"""The read path: GETs take no write lock, tokens are verified once, the pool does not churn,
and a read that goes straight to the driver fails (and recovers) as any other read does."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.security.jwt import Token
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util import greenlet_spawn

from app.auth import DECODED_TOKENS, DecodedTokens
from app.db import create_engine, create_read_sessionmaker, create_sessionmaker, driver_fetchrow
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


# A read whose pooled connection must reconnect first tries without I/O, and SQLAlchemy drops
# the connect it may not run there with this warning; the read then reconnects properly.
RECONNECT_WARNING = "ignore:coroutine 'connect' was never awaited:RuntimeWarning"


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@contextlib.asynccontextmanager
async def _ledger_accounts_locked(url: str) -> AsyncIterator[None]:
    """Another connection holds ledger_accounts in ACCESS EXCLUSIVE mode: every read of it waits."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute("BEGIN; LOCK TABLE ledger_accounts IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        await conn.close()  # ends the transaction, and so the lock


async def test_a_wallet_read_past_the_statement_timeout_is_a_503_and_its_connection_reads_on(
    postgres_url: str, redis_url: str
) -> None:
    settings = make_settings(postgres_url, redis_url, db_statement_timeout_s=1)
    async with AsyncTestClient(app=create_app(settings), timeout=30) as client:
        _, headers = await sign_up(client)
        assert (await client.get("/v1/wallet", headers=headers)).status_code == 200
        async with _ledger_accounts_locked(postgres_url):
            response = await client.get("/v1/wallet", headers=headers)
        body = assert_problem(response, 503, "service-unavailable")
        assert response.headers["retry-after"]
        assert "57014" not in str(body)  # the driver's error is logged, not shown
        for _ in range(3):  # the connection the timeout hit went back to the pool, usable
            assert (await client.get("/v1/wallet", headers=headers)).status_code == 200


@pytest.mark.filterwarnings(RECONNECT_WARNING)
async def test_reads_recover_from_connections_the_server_closed(
    postgres_url: str, redis_url: str
) -> None:
    # Two pooled connections at most; the chain writer stays asleep after its first pass.
    settings = make_settings(postgres_url, redis_url, db_pool_size=1, ledger_chain_interval_s=3600)
    async with AsyncTestClient(app=create_app(settings), timeout=30) as client:
        _, headers = await sign_up(client)
        assert (await client.get("/v1/wallet", headers=headers)).status_code == 200
        await _terminate_other_sessions(postgres_url)
        answers = [await client.get("/v1/wallet", headers=headers) for _ in range(5)]
    failed = [a for a in answers if a.status_code != 200]
    for answer in failed:
        # The database went away under the read: 503, never 500.
        assert_problem(answer, 503, "service-unavailable")
    # Each dead connection fails one read at most and is then replaced, never handed out again.
    assert len(failed) <= 2
    assert [a.status_code for a in answers[-3:]] == [200, 200, 200]


@pytest.mark.filterwarnings(RECONNECT_WARNING)
async def test_a_pooled_connection_the_driver_knows_is_closed_is_replaced_not_read_from(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url, pool_size=1)
    readers = create_read_sessionmaker(engine)
    try:
        async with readers() as session:
            assert await driver_fetchrow(session, "SELECT 1") == (1,)  # opens the connection
        # Close it under the pool's feet, as a server restart would, and put it back.
        pooled = await engine.raw_connection()
        await pooled.driver_connection.close()  # type: ignore[union-attr]
        await greenlet_spawn(pooled.close)
        assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        async with readers() as session:
            assert await driver_fetchrow(session, "SELECT 2") == (2,)
    finally:
        await engine.dispose()


async def test_a_driver_read_that_cannot_connect_fails_as_a_session_read_does(
    postgres_url: str,
) -> None:
    # Connect errors are answered by category (too many clients: 503), so they must arrive as
    # the same SQLAlchemy error, whichever way the read went.
    engine = create_engine(postgres_url.rpartition("/")[0] + "/copool_no_such_database")
    readers = create_read_sessionmaker(engine)
    try:
        async with readers() as session:
            with pytest.raises(DBAPIError) as through_session:
                await session.execute(text("SELECT 1"))
        async with readers() as session:
            with pytest.raises(DBAPIError) as through_driver:
                await driver_fetchrow(session, "SELECT 1")
    finally:
        await engine.dispose()
    assert type(through_driver.value) is type(through_session.value)
    causes = [e.value.orig.__cause__ for e in (through_session, through_driver)]
    assert [getattr(c, "sqlstate", None) for c in causes] == ["3D000", "3D000"]


async def _terminate_other_sessions(url: str) -> None:
    admin = await asyncpg.connect(_dsn(url))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()


async def test_reads_give_back_every_connection_they_take(
    database_url: str, redis_url: str
) -> None:
    settings = make_settings(database_url, redis_url, ledger_chain_interval_s=3600)
    app = create_app(settings)
    async with AsyncTestClient(app=app) as client:
        _, headers = await sign_up(client)
        paths = ["/v1/wallet", "/v1/wallet?currency=EUR", "/v1/wallet/transactions", "/v1/me"]
        for path in paths * 3 + ["/v1/ledger/head"]:
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)
        pool = app.state.engine.pool
        for _ in range(100):  # the chain writer's first pass may still hold one
            if pool.checkedout() == 0:
                break
            await asyncio.sleep(0.02)
        assert pool.checkedout() == 0


async def test_a_driver_read_first_in_a_transaction_runs_inside_it(postgres_url: str) -> None:
    # A unit of work's session begins its transaction with its first statement; a driver read
    # (a batch's `SELECT ... FOR UPDATE` of the pool) may be that statement, and must not run
    # (and let its locks go) before the BEGIN: it sees the transaction id the session's later
    # statements see.
    engine = create_engine(postgres_url, pool_size=1)
    query = "SELECT pg_current_xact_id()::text"
    try:
        async with create_sessionmaker(engine)() as session:
            (first,) = await driver_fetchrow(session, query)
            assert (await session.execute(text(query))).scalar_one() == first
        async with create_read_sessionmaker(engine)() as reader:  # autocommit: no BEGIN
            (one,) = await driver_fetchrow(reader, query)
            (other,) = await driver_fetchrow(reader, query)
            assert one != other
    finally:
        await engine.dispose()

"""Flash crowds on PostgreSQL: a thousand joins at once over real connections never oversell,
whatever happens to the admission gate in Redis meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from redis.asyncio import Redis
from sqlalchemy import func, select

from app.db import create_engine, create_sessionmaker
from groupbuy.admission import key
from groupbuy.models import Join, JoinStatus
from payments.models import Account
from tests.conftest import make_settings
from tests.support.crowd import funded_members
from tests.support.ledger import fund
from tests.support.live_server import live_server
from tests.support.pools import TIERS, ledger_verifies
from tests.support.users import sign_up

CAP = 300
CROWD = 1_000
FUNDS = 5_000


async def run_crowd(
    postgres_url: str,
    redis_url: str,
    *,
    cap: int,
    crowd_size: int,
    during: Callable[[UUID, int], Awaitable[None]] | None = None,
) -> None:
    """`crowd_size` members join a pool capped at `cap` at once; `during(pool_id, answered)` runs
    after every answer. Then: exactly `cap` joins committed with exactly their holds, no wallet
    below zero, every 201 a join in the database, the ledger verifies."""
    # The crowd's clients share this process (and its GIL) with the server: give a request
    # waiting for a database connection longer than the default 10 s.
    settings = make_settings(postgres_url, redis_url, db_pool_size=20, db_connect_timeout_s=30)
    engine = create_engine(postgres_url)
    sessionmaker = create_sessionmaker(engine)
    now = datetime.now(UTC)
    try:
        crowd = await funded_members(
            sessionmaker, settings, count=crowd_size, amount_minor=FUNDS, now=now
        )
        with live_server(settings) as url:
            # Several clients of 100 connections each: one pool of 1,000 costs httpx quadratic time.
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
            clients = [
                httpx.AsyncClient(base_url=url, limits=limits, timeout=120)
                for _ in range(-(-crowd_size // 100))
            ]
            async with contextlib.AsyncExitStack() as stack:
                for each in clients:
                    await stack.enter_async_context(each)
                client = clients[0]
                organizer, organizer_h = await sign_up(client, roles=["organizer"])  # type: ignore[arg-type]
                # A new organizer of a pool this size leaves a deposit (the trust gate).
                await fund(sessionmaker, uuid.UUID(organizer), 100_000, "CNY", now=now)
                pool = await client.post(
                    "/v1/pools",
                    json={
                        "title": "Flash sale",
                        "currency": "CNY",
                        "tiers": TIERS,
                        "min_quantity": 1,
                        "max_quantity": cap,
                        "deadline": (now + timedelta(hours=1)).isoformat(),
                    },
                    headers=organizer_h,
                )
                assert pool.status_code == 201, pool.text
                pool_id = pool.json()["id"]
                answered = 0

                async def join(index: int, headers: dict[str, str]) -> Any:
                    nonlocal answered
                    answer = await clients[index % len(clients)].post(
                        f"/v1/pools/{pool_id}/joins", json={"quantity": 1}, headers=headers
                    )
                    answered += 1
                    if during is not None:
                        await during(uuid.UUID(pool_id), answered)
                    return answer

                answers = await asyncio.gather(
                    *(join(index, headers) for index, (_, headers) in enumerate(crowd))
                )
                statuses = Counter(a.status_code for a in answers)
                problems = Counter(a.json().get("type") for a in answers if a.status_code != 201)
                progress = (await client.get(f"/v1/pools/{pool_id}", headers=organizer_h)).json()
        assert statuses[201] == cap, (statuses, problems)
        assert set(problems) <= {"pool-full", "pool-closed"}, problems
        assert progress["committed_quantity"] == cap
        assert progress["status"] == "succeeded"  # it filled
        acknowledged = {
            user_id
            for (user_id, _), answer in zip(crowd, answers, strict=True)
            if answer.status_code == 201
        }

        async with sessionmaker() as session:
            joined = (
                await session.execute(
                    select(Join.user_id, Join.held_minor).where(  # type: ignore[call-overload]
                        Join.pool_id == uuid.UUID(pool_id),
                        Join.status == JoinStatus.ACTIVE.value,
                    )
                )
            ).all()
            negative = (
                await session.execute(
                    select(func.count()).where(
                        Account.kind == "wallet",  # type: ignore[arg-type]
                        Account.credits_posted  # type: ignore[operator]
                        < Account.debits_posted + Account.debits_pending,
                    )
                )
            ).scalar_one()
        assert {user_id for user_id, _ in joined} == acknowledged  # no join lost, none extra
        assert sum(held for _, held in joined) == cap * TIERS[0]["unit_price_minor"]
        assert negative == 0
        await ledger_verifies(sessionmaker)
    finally:
        await engine.dispose()


async def test_a_thousand_concurrent_joins_on_a_pool_capped_at_300_commit_exactly_300(
    postgres_url: str, redis_url: str
) -> None:
    await run_crowd(postgres_url, redis_url, cap=CAP, crowd_size=CROWD)


async def test_flushing_redis_in_the_middle_of_a_flash_crowd_oversells_nothing_and_loses_nothing(
    postgres_url: str, redis_url: str
) -> None:
    redis = Redis.from_url(redis_url)

    async def flush(_: UUID, answered: int) -> None:
        if answered in (100, 250, 400):
            await redis.flushdb()

    try:
        await run_crowd(postgres_url, redis_url, cap=CAP, crowd_size=CROWD, during=flush)
    finally:
        await redis.aclose()


async def test_a_gate_that_counts_too_much_never_oversells(
    postgres_url: str, redis_url: str
) -> None:
    redis = Redis.from_url(redis_url)

    async def overcount(pool_id: UUID, answered: int) -> None:
        if answered == 1:  # the gate now believes far more is left than the database has
            await redis.set(key(pool_id), 10_000, ex=60)

    try:
        await run_crowd(postgres_url, redis_url, cap=20, crowd_size=120, during=overcount)
    finally:
        await redis.aclose()

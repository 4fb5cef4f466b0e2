"""Flash crowds on PostgreSQL: a thousand joins at once over real connections never oversell."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from app.db import create_engine, create_sessionmaker
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


async def test_a_thousand_concurrent_joins_on_a_pool_capped_at_300_commit_exactly_300(
    postgres_url: str, redis_url: str
) -> None:
    settings = make_settings(postgres_url, redis_url, db_pool_size=20)
    engine = create_engine(postgres_url)
    sessionmaker = create_sessionmaker(engine)
    now = datetime.now(UTC)
    try:
        crowd = await funded_members(
            sessionmaker, settings, count=CROWD, amount_minor=FUNDS, now=now
        )
        with live_server(settings) as url:
            limits = httpx.Limits(max_connections=CROWD, max_keepalive_connections=CROWD)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
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
                        "max_quantity": CAP,
                        "deadline": (now + timedelta(hours=1)).isoformat(),
                    },
                    headers=organizer_h,
                )
                assert pool.status_code == 201, pool.text
                pool_id = pool.json()["id"]

                async def join(headers: dict[str, str]) -> Any:
                    return await client.post(
                        f"/v1/pools/{pool_id}/joins", json={"quantity": 1}, headers=headers
                    )

                answers = await asyncio.gather(*(join(headers) for _, headers in crowd))
                statuses = Counter(a.status_code for a in answers)
                problems = Counter(a.json().get("type") for a in answers if a.status_code != 201)
                progress = (await client.get(f"/v1/pools/{pool_id}", headers=organizer_h)).json()
        assert statuses[201] == CAP, (statuses, problems)
        assert set(problems) <= {"pool-full", "pool-closed"}, problems
        assert progress["committed_quantity"] == CAP
        assert progress["status"] == "succeeded"  # it filled

        async with sessionmaker() as session:
            joined = (
                await session.execute(
                    select(func.count(), func.sum(Join.held_minor)).where(  # type: ignore[arg-type]
                        Join.pool_id == uuid.UUID(pool_id),  # type: ignore[arg-type]
                        Join.status == JoinStatus.ACTIVE.value,  # type: ignore[arg-type]
                    )
                )
            ).one()
            negative = (
                await session.execute(
                    select(func.count()).where(
                        Account.kind == "wallet",  # type: ignore[arg-type]
                        Account.credits_posted  # type: ignore[operator]
                        < Account.debits_posted + Account.debits_pending,
                    )
                )
            ).scalar_one()
        assert tuple(joined) == (CAP, CAP * TIERS[0]["unit_price_minor"])
        assert negative == 0
        await ledger_verifies(sessionmaker)
    finally:
        await engine.dispose()

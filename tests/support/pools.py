"""Helpers for pool tests: open a pool, fund members, settle as the worker would, read money."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.db import SessionMaker
from groupbuy.jobs import settle_due_pools, settle_pool
from payments.models import Transfer
from payments.service import wallet_balance
from payments.verify import verify_ledger
from tests.support.ledger import fund
from tests.support.trust import TrustWorld

TIERS = [
    {"min_quantity": 1, "unit_price_minor": 1_000},
    {"min_quantity": 5, "unit_price_minor": 800},
    {"min_quantity": 10, "unit_price_minor": 600},
]


def pool_body(deadline: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "title": "Yunnan coffee beans, 1 kg",
        "description": "Picked up at the north gate.",
        "currency": "CNY",
        "tiers": TIERS,
        "min_quantity": 5,
        "max_quantity": 20,
        "deadline": deadline.isoformat(),
        **extra,
    }


async def open_pool(world: TrustWorld, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
    deadline = world.clock() + timedelta(hours=1)
    answer = await world.client.post(
        "/v1/pools", json=pool_body(deadline, **extra), headers=headers
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def member(world: TrustWorld, amount_minor: int = 10_000) -> tuple[uuid.UUID, dict[str, str]]:
    user_id, headers = await world.user()
    await fund(world.sessionmaker, user_id, amount_minor, "CNY", now=world.clock())
    return user_id, headers


def worker_ctx(world: TrustWorld) -> dict[str, Any]:
    return {
        "sessionmaker": world.sessionmaker,
        "clock": world.clock,
        "settings": world.client.app.state.settings,
    }


async def settle(world: TrustWorld, pool_id: str) -> str:
    """Run the settlement job once, as the worker would."""
    return await settle_pool(worker_ctx(world), pool_id)


async def sweep(world: TrustWorld) -> int:
    return await settle_due_pools(worker_ctx(world))


async def wallet(sessionmaker: SessionMaker, user_id: uuid.UUID) -> tuple[int, int]:
    """(available, held) of the user's CNY wallet."""
    async with sessionmaker() as session:
        balance = await wallet_balance(session, user_id, "CNY")
    return balance.available_minor, balance.held_minor


async def ledger_verifies(sessionmaker: SessionMaker) -> None:
    async with sessionmaker() as session:
        report = await verify_ledger(session)
    assert report.ok, report.problem


async def join_ledger(sessionmaker: SessionMaker, join_id: str) -> list[tuple[str, int, str]]:
    """Every ledger row of a join, oldest first: (id after the join's, amount, status) of its
    holds (`v1`, `v2`, ...) and their resolutions (`v1/posted`, ...)."""
    transfers = Transfer.__table__  # type: ignore[attr-defined]
    marker = f":join:{join_id}:"
    async with sessionmaker() as session:
        rows = await session.execute(
            select(transfers.c.id, transfers.c.amount_minor, transfers.c.status)
            .where(transfers.c.id.contains(marker))
            .order_by(transfers.c.row_id)
        )
        return [(i.partition(marker)[2], amount, status) for i, amount, status in rows.all()]

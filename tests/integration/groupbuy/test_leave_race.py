"""A leave that waits while a raise of the same join commits gives back what the join holds
then (it reads the join only once it holds the pool's row). PostgreSQL: row locks are what this
is about (SQLite runs one writer at a time)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from groupbuy import service
from groupbuy.batch import Ticket
from payments import ledger
from tests.support.ledger import fund
from tests.support.pools import ledger_verifies, member, open_pool, wallet
from tests.support.trust import TrustWorld

FUNDS = 100_000


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_leave_waiting_behind_a_raise_gives_back_the_raised_quantity(
    world: TrustWorld,
) -> None:
    organizer, organizer_h = await world.user(roles=["organizer"])
    await fund(world.sessionmaker, organizer, FUNDS, "CNY", now=world.clock())
    pool_body = await open_pool(world, organizer_h, max_quantity=100)
    pool_id = uuid.UUID(pool_body["id"])
    user, headers = await member(world, FUNDS)
    joined = await world.client.post(
        f"/v1/pools/{pool_id}/joins", json={"quantity": 2}, headers=headers
    )
    assert joined.status_code == 201, joined.text
    now = world.clock()

    async with world.uow as raise_uow:  # a raise (as a batch makes it) holding the pool's row
        pool, joins = await service._pool_and_joins(raise_uow.session, pool_id, [user])
        leaving = asyncio.create_task(
            service.leave_pool(
                world.uow,
                pool_id=pool_id,
                join_id=uuid.UUID(joined.json()["id"]),
                user_id=user,
                admission=None,
                now=now,
            )
        )
        await asyncio.sleep(0.3)  # the leave is now waiting for the pool's row
        assert not leaving.done()
        ids, _ = await ledger.open_and_lock(
            raise_uow.session,
            [service.wallet_account(user, "CNY"), service.pool_escrow(pool)],
            now,
        )
        before = joins[user]
        total = before.quantity + 3
        amount = service.pricing.hold_minor(service.tiers_of(pool), total, premium_bp=0)
        ticket = Ticket(user_id=user, quantity=3, request_id=None, now=now)
        plan = service._plan(0, pool, before, ticket, total, amount, True, now)
        await service._apply_plans(
            raise_uow, pool=pool, plans=[plan], locked=ids, schedule=None, now=now
        )
        await raise_uow.commit()
    left = await leaving
    assert (left.status, left.quantity) == ("left", 5)
    state = (await world.client.get(f"/v1/pools/{pool_id}", headers=organizer_h)).json()
    assert (state["committed_quantity"], state["participant_count"]) == (0, 0)
    assert await wallet(world.sessionmaker, user) == (FUNDS, 0)
    await ledger_verifies(world.sessionmaker)

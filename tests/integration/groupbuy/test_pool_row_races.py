"""Use cases waiting for a pool's row while a join holds it see what the join committed: a leave
gives back the raised quantity (it reads the join only once it holds the row), and a settlement
at the deadline counts a join committed just before it. PostgreSQL: row locks are what this is
about (SQLite runs one writer at a time)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from groupbuy import service
from groupbuy.batch import Ticket
from groupbuy.models import PoolStatus
from payments import ledger
from tests.support.ledger import fund
from tests.support.locks import lock_waiters
from tests.support.pools import ledger_verifies, member, open_pool, wallet, worker_ctx
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
        await lock_waiters(world.sessionmaker, 1)  # the leave waits for the pool's row
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


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_settlement_at_the_deadline_counts_the_join_that_holds_the_row(
    world: TrustWorld,
) -> None:
    """Without the settlement's lock it read 4 of a minimum of 5 and failed the pool, voiding the
    hold of a join that had been answered 201."""
    _, organizer_h = await world.user(roles=["organizer"])
    pool_body = await open_pool(world, organizer_h, min_quantity=5)
    pool_id = uuid.UUID(pool_body["id"])
    _, first_h = await member(world, FUNDS)
    joined = await world.client.post(
        f"/v1/pools/{pool_id}/joins", json={"quantity": 4}, headers=first_h
    )
    assert joined.status_code == 201, joined.text
    last, _ = await member(world, FUNDS)
    before_deadline = world.clock()
    at_deadline = before_deadline + timedelta(hours=1)
    config = worker_ctx(world)["settings"].trust()

    async with world.uow as join_uow:  # the last join (as a batch makes it), holding the row
        pool, _ = await service._pool_and_joins(join_uow.session, pool_id, [last])
        settling = asyncio.create_task(
            service.settle_pool(world.uow, pool_id=pool_id, config=config, now=at_deadline)
        )
        await lock_waiters(world.sessionmaker, 1)  # the settlement waits for the pool's row
        assert not settling.done()
        ids, _ = await ledger.open_and_lock(
            join_uow.session,
            [service.wallet_account(last, "CNY"), service.pool_escrow(pool)],
            before_deadline,
        )
        amount = service.pricing.hold_minor(service.tiers_of(pool), 1, premium_bp=0)
        ticket = Ticket(user_id=last, quantity=1, request_id=None, now=before_deadline)
        plan = service._plan(0, pool, None, ticket, 1, amount, False, before_deadline)
        await service._apply_plans(
            join_uow, pool=pool, plans=[plan], locked=ids, schedule=None, now=before_deadline
        )
        await join_uow.commit()
    settled = await settling
    assert (settled.status, settled.committed_quantity) == (PoolStatus.SUCCEEDED, 5)
    assert (settled.final_unit_price_minor, settled.settled_at is not None) == (800, True)
    assert await wallet(world.sessionmaker, last) == (FUNDS - 800, 0)  # the tier of 5 units
    await ledger_verifies(world.sessionmaker)

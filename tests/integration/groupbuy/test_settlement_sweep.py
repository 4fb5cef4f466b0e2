"""The settlement sweep over a database of its own (it looks at every pool), both backends: a pool
whose payout the trust gate holds back (a banned organizer) is tried again later, after the pools
never tried, so such pools cannot keep the sweep from the rest."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from groupbuy import service
from tests.support.ledger import fund
from tests.support.pools import ledger_verifies, member, open_pool, sweep, wallet
from tests.support.trust import TrustWorld

FUNDS = 100_000


async def succeeding_pool(world: TrustWorld, organizer_h: dict[str, str]) -> str:
    pool = await open_pool(world, organizer_h)
    _, member_h = await member(world, FUNDS)
    joined = await world.client.post(
        f"/v1/pools/{pool['id']}/joins", json={"quantity": 5}, headers=member_h
    )
    assert joined.status_code == 201, joined.text
    return str(pool["id"])


async def due(world: TrustWorld, limit: int) -> list[str]:
    async with world.sessionmaker() as session:
        return [str(p) for p in await service.due_pools(session, now=world.clock(), limit=limit)]


async def test_a_held_back_payout_is_tried_again_after_the_pools_never_tried(
    own_world: TrustWorld,
) -> None:
    world = own_world
    held_org, held_h = await world.user(roles=["organizer"])
    good_org, good_h = await world.user(roles=["organizer"])
    _, admin_h = await world.admin()
    for organizer in (held_org, good_org):
        await fund(world.sessionmaker, organizer, FUNDS, "CNY", now=world.clock())
    held = await succeeding_pool(world, held_h)
    world.clock.advance(timedelta(minutes=10))
    await succeeding_pool(world, good_h)
    banned = await world.client.post(
        f"/v1/admin/users/{held_org}/ban", json={"reason": "Fraudulent pools"}, headers=admin_h
    )
    assert banned.status_code == 200, banned.text

    world.clock.advance(timedelta(hours=2))
    assert await sweep(world) == 2
    assert await due(world, 10) == [held]  # its payout waits in escrow
    assert await wallet(world.sessionmaker, held_org) == (FUNDS, 0)

    later = await succeeding_pool(world, good_h)  # its deadline is the latest of all
    world.clock.advance(timedelta(hours=2))
    assert await due(world, 1) == [later]  # before, the held-back pool came first, every time
    assert await sweep(world) == 2
    assert await due(world, 10) == [held]

    unbanned = await world.client.post(f"/v1/admin/users/{held_org}/unban", headers=admin_h)
    assert unbanned.status_code == 200, unbanned.text
    assert await sweep(world) == 1
    assert await due(world, 10) == []
    paid = (await wallet(world.sessionmaker, held_org))[0]
    assert paid > FUNDS
    await ledger_verifies(world.sessionmaker)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_the_sweep_reads_only_the_pools_not_settled_yet(world: TrustWorld) -> None:
    """Its query can be answered from the partial index of unsettled pools: it never needs to
    read the settled history (which only grows)."""
    query = service.due_pools_query(now=world.clock(), limit=50)
    sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    async with world.uow as uow:
        await uow.session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join((await uow.session.execute(text("EXPLAIN " + sql))).scalars())
    assert "ix_pools_unsettled" in plan, plan

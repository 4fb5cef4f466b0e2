"""The group commit of joins (`groupbuy.service._join_batch`), driven directly so that one batch
holds every case at once: each join is answered on its own, and the ledger and the pool's row
end exactly as the joins that succeeded say (both backends)."""

from __future__ import annotations

import uuid

import msgspec

from groupbuy import service
from groupbuy.batch import Fallback, Ticket
from groupbuy.errors import OrganizerCannotJoin, PoolFull
from payments.errors import InsufficientFunds
from tests.support.ledger import fund
from tests.support.pools import join_ledger, ledger_verifies, member, open_pool, wallet
from tests.support.trust import TrustWorld
from trust.errors import Denied

FUNDS = 100_000


async def _pool(world: TrustWorld, pool_id: str, headers: dict[str, str]) -> dict[str, int]:
    body = (await world.client.get(f"/v1/pools/{pool_id}", headers=headers)).json()
    return {"committed": body["committed_quantity"], "members": body["participant_count"]}


async def test_one_batch_answers_each_join_on_its_own_and_moves_exactly_their_money(
    world: TrustWorld,
) -> None:
    organizer, organizer_h = await world.user(roles=["organizer"])
    await fund(world.sessionmaker, organizer, FUNDS, "CNY", now=world.clock())
    pool = await open_pool(world, organizer_h, max_quantity=100)
    pool_id = uuid.UUID(pool["id"])
    a, _ = await member(world, FUNDS)
    b, b_h = await member(world, FUNDS)
    broke, _ = await member(world, 2_500)
    banned, _ = await member(world, FUNDS)
    newcomer, _ = await member(world, FUNDS)
    earlier = await world.client.post(
        f"/v1/pools/{pool_id}/joins", json={"quantity": 2}, headers=b_h
    )
    assert earlier.status_code == 201, earlier.text
    _, admin_h = await world.admin()
    ban = await world.client.post(
        f"/v1/admin/users/{banned}/ban", json={"reason": "fraud"}, headers=admin_h
    )
    assert ban.status_code == 200, ban.text

    def ticket(user: uuid.UUID, quantity: int, request_id: str | None = None) -> Ticket:
        return Ticket(user_id=user, quantity=quantity, request_id=request_id, now=world.clock())

    config = world.client.app.state.trust
    answers = await service._join_batch(
        world.uow,
        pool_id=pool_id,
        tickets=[
            ticket(a, 3, "req-a"),
            ticket(b, 4),  # a raise: a second hold, of what it adds
            ticket(broke, 3),  # 3,000 held from 2,500
            ticket(organizer, 1),
            ticket(a, 1),  # the same member twice: the second goes alone, after the batch
            ticket(banned, 1),
            ticket(newcomer, 60),  # 60,000: the gate asks a new user for a deposit
        ],
        config=config,
        schedule=None,
    )
    joined_a, joined_b, poor, own, again, refused, deposit = answers
    assert isinstance(joined_a, service.Joined)
    assert joined_a.join.quantity == 3
    assert isinstance(joined_b, service.Joined)
    assert joined_b.join.quantity == 6
    assert joined_b.join.version == 2
    assert joined_b.join.id == uuid.UUID(earlier.json()["id"])
    assert joined_a.committed_quantity == joined_b.committed_quantity == 9
    assert isinstance(poor, InsufficientFunds)
    assert isinstance(own, OrganizerCannotJoin)
    assert again is Fallback.SINGLE
    assert deposit is Fallback.SINGLE
    assert isinstance(refused, Denied)
    assert "banned" in refused.extra["reasons"]

    assert await wallet(world.sessionmaker, a) == (FUNDS - 3_000, 3_000)
    assert await wallet(world.sessionmaker, b) == (FUNDS - 6_000, 6_000)
    assert await join_ledger(world.sessionmaker, str(joined_b.join.id)) == [
        ("v1", 2_000, "pending"),
        ("v2", 4_000, "pending"),
    ]
    for untouched in (broke, banned, newcomer):
        assert (await wallet(world.sessionmaker, untouched))[1] == 0
    assert await _pool(world, pool["id"], organizer_h) == {"committed": 9, "members": 2}

    # A second batch: a's retried request answers the join unchanged; a join past the cap is
    # refused alone (the gate relaxed, so nobody needs a deposit), the rest fits exactly.
    relaxed = msgspec.structs.replace(
        config, rules=msgspec.structs.replace(config.rules, new_user_amount_minor=10**9)
    )
    retry, too_many, fits = await service._join_batch(
        world.uow,
        pool_id=pool_id,
        tickets=[ticket(a, 3, "req-a"), ticket(newcomer, 92), ticket(newcomer, 91)],
        config=relaxed,
        schedule=None,
    )
    assert isinstance(retry, service.Joined)
    assert retry.join.quantity == 3
    assert isinstance(too_many, PoolFull)
    assert too_many.extra["available_quantity"] == 91
    assert fits is Fallback.SINGLE  # the same member's second join of the batch
    last = await service._join_batch(
        world.uow,
        pool_id=pool_id,
        tickets=[ticket(newcomer, 91)],
        config=relaxed,
        schedule=None,
    )
    assert isinstance(last[0], service.Joined)
    assert last[0].filled
    assert await _pool(world, pool["id"], organizer_h) == {"committed": 100, "members": 3}
    state = (await world.client.get(f"/v1/pools/{pool_id}", headers=organizer_h)).json()
    assert state["status"] == "succeeded"
    assert await wallet(world.sessionmaker, a) == (FUNDS - 3_000, 3_000)
    assert await wallet(world.sessionmaker, newcomer) == (FUNDS - 91_000, 91_000)
    await ledger_verifies(world.sessionmaker)

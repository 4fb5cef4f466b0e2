"""Deposits the trust gate asks of pool members and organizers: taken again after a leave, topped
up on a raise, kept through the complaint window after success, forfeited by an upheld complaint,
released by the sweep otherwise."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.support.ledger import fund
from tests.support.pools import TIERS, ledger_verifies, member, settle, wallet, worker_ctx
from tests.support.trust import TrustWorld
from trust.jobs import release_deposits

FUNDS = 200_000


async def _rice_pool(world: TrustWorld) -> tuple[uuid.UUID, dict[str, str], str]:
    """A new organizer with 100,000 CNY and their pool of up to 200 (which asks a deposit)."""
    organizer, organizer_h = await world.user(roles=["organizer"])
    await fund(world.sessionmaker, organizer, 100_000, "CNY", now=world.clock())
    deadline = world.clock() + timedelta(hours=1)
    opened = await world.client.post(
        "/v1/pools",
        json={
            "title": "Rice",
            "currency": "CNY",
            "tiers": TIERS,
            "min_quantity": 5,
            "max_quantity": 200,
            "deadline": deadline.isoformat(),
        },
        headers=organizer_h,
    )
    assert opened.status_code == 201, opened.text
    return organizer, organizer_h, str(opened.json()["id"])


async def test_deposits_follow_the_join_and_outlive_the_pool_until_the_complaint_window_closes(
    world: TrustWorld,
) -> None:
    rules = world.client.app.state.trust.rules
    organizer, organizer_h, pool_id = await _rice_pool(world)
    _, admin_h = await world.admin()
    organizer_deposit = 200 * 1_000 * rules.new_user_deposit_bp // 10_000
    assert await wallet(world.sessionmaker, organizer) == (
        100_000 - organizer_deposit,
        organizer_deposit,
    )

    a, a_h = await member(world, FUNDS)
    joins = f"/v1/pools/{pool_id}/joins"
    first = await world.client.post(joins, json={"quantity": 60}, headers=a_h)
    assert first.status_code == 201, first.text
    deposit = 60_000 * rules.new_user_deposit_bp // 10_000
    assert await wallet(world.sessionmaker, a) == (FUNDS - 60_000 - deposit, 60_000 + deposit)
    left = await world.client.delete(f"{joins}/{first.json()['id']}", headers=a_h)
    assert left.status_code == 200
    assert await wallet(world.sessionmaker, a) == (FUNDS, 0)
    # Joining again takes the deposit again; raising the join tops it up.
    assert (await world.client.post(joins, json={"quantity": 60}, headers=a_h)).status_code == 201
    assert await wallet(world.sessionmaker, a) == (FUNDS - 60_000 - deposit, 60_000 + deposit)
    raised = await world.client.post(joins, json={"quantity": 40}, headers=a_h)
    assert raised.status_code == 201, raised.text
    deposit = 100_000 * rules.new_user_deposit_bp // 10_000
    assert await wallet(world.sessionmaker, a) == (FUNDS - 100_000 - deposit, 100_000 + deposit)

    b, b_h = await member(world, FUNDS)
    assert (await world.client.post(joins, json={"quantity": 30}, headers=b_h)).status_code == 201
    b_deposit = (
        30_000 * rules.new_user_deposit_bp // 10_000 if rules.new_user_amount_minor < 30_000 else 0
    )

    closed = await world.client.post(f"/v1/pools/{pool_id}/close", headers=organizer_h)
    assert closed.status_code == 200, closed.text
    await settle(world, pool_id)
    # Charged at 600 a unit; deposits stay held through the complaint window.
    assert await wallet(world.sessionmaker, a) == (FUNDS - 60_000 - deposit, deposit)
    assert await wallet(world.sessionmaker, b) == (FUNDS - 18_000 - b_deposit, b_deposit)

    filed = await world.client.post(
        "/v1/complaints",
        json={
            "subject_type": "pool",
            "subject_id": pool_id,
            "against_user_id": str(a),
            "text": "Never picked the rice up.",
            "category": "no_show",
        },
        headers=organizer_h,
    )
    assert filed.status_code == 201, filed.text
    decided = await world.client.post(
        f"/v1/admin/complaints/{filed.json()['id']}/decide",
        json={
            "outcome": "upheld",
            "reason": "Confirmed by the pickup point.",
            "forfeit_deposit": True,
        },
        headers=admin_h,
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["forfeited_minor"] == deposit
    assert await wallet(world.sessionmaker, a) == (FUNDS - 60_000 - deposit, 0)

    ctx = worker_ctx(world)
    assert await release_deposits(ctx) == 0  # the window is still open
    world.clock.advance(world.client.app.state.trust.rating_window + timedelta(hours=2))
    assert await release_deposits(ctx) >= 1
    payout = 130 * 600 - 130 * 600 * world.client.app.state.settings.pool_fee_bp // 10_000
    assert await wallet(world.sessionmaker, organizer) == (100_000 + payout + deposit, 0)
    assert await wallet(world.sessionmaker, b) == (FUNDS - 18_000, 0)
    await ledger_verifies(world.sessionmaker)


async def test_a_join_short_of_its_deposit_says_what_both_need_and_moves_nothing(
    world: TrustWorld,
) -> None:
    rules = world.client.app.state.trust.rules
    _, _, pool_id = await _rice_pool(world)
    # Exactly the join's hold: not its deposit on top.
    a, a_h = await member(world, 60_000)
    deposit = 60_000 * rules.new_user_deposit_bp // 10_000
    assert deposit > 0
    answer = await world.client.post(
        f"/v1/pools/{pool_id}/joins", json={"quantity": 60}, headers=a_h
    )
    assert answer.status_code == 402, answer.text
    assert answer.json()["detail"] == (
        f"this join holds 60000 and a new member's deposit of {deposit} CNY minor units: "
        f"the wallet has less than {60_000 + deposit} available"
    )
    assert await wallet(world.sessionmaker, a) == (60_000, 0)
    await ledger_verifies(world.sessionmaker)

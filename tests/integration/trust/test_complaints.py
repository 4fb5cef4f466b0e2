"""Complaints over HTTP: filed by a party, seen by both parties only, decided once by an admin
with a reason, audited; upheld ones count against the accused and can move money."""

from __future__ import annotations

import uuid
from typing import Any

from payments.service import wallet_balance
from payments.verify import verify_ledger
from tests.support.ledger import fund
from tests.support.trust import TrustWorld
from tests.support.users import assert_problem
from trust import deposits
from trust.models import PartyRole, SubjectType

DRIVER, RIDER = PartyRole.DRIVER, PartyRole.RIDER


def complaint(subject_id: Any, against: Any, **extra: Any) -> dict[str, Any]:
    return {
        "subject_type": "match",
        "subject_id": str(subject_id),
        "against_user_id": str(against),
        "text": "The driver never showed up.",
        "category": "no_show",
        **extra,
    }


async def test_a_complaint_is_seen_by_both_parties_and_decided_once_with_an_audit_row(
    world: TrustWorld,
) -> None:
    driver, driver_h = await world.user()
    rider, rider_h = await world.user()
    _, stranger_h = await world.user()
    admin, admin_h = await world.admin()
    match = await world.completed((driver, DRIVER), (rider, RIDER))

    filed = await world.client.post(
        "/v1/complaints", json=complaint(match, driver), headers=rider_h
    )
    assert filed.status_code == 201, filed.text
    body = filed.json()
    assert (body["status"], body["against_user_id"], body["category"]) == (
        "open",
        str(driver),
        "no_show",
    )
    complaint_id = body["id"]
    assert_problem(
        await world.client.post("/v1/complaints", json=complaint(match, driver), headers=rider_h),
        409,
        "already-complained",
    )

    # Filer and accused see it; anyone else gets 404; members cannot use admin routes.
    for headers in (rider_h, driver_h):
        mine = await world.client.get("/v1/complaints", headers=headers)
        assert [c["id"] for c in mine.json()["items"]] == [complaint_id]
        one = await world.client.get(f"/v1/complaints/{complaint_id}", headers=headers)
        assert one.status_code == 200
    assert (await world.client.get("/v1/complaints", headers=stranger_h)).json()["items"] == []
    assert_problem(
        await world.client.get(f"/v1/complaints/{complaint_id}", headers=stranger_h),
        404,
        "complaint-not-found",
    )
    decide = f"/v1/admin/complaints/{complaint_id}/decide"
    upheld = {"outcome": "upheld", "reason": "GPS shows no pickup."}
    assert_problem(await world.client.post(decide, json=upheld, headers=rider_h), 403, "forbidden")
    assert_problem(
        await world.client.get("/v1/admin/complaints", headers=driver_h), 403, "forbidden"
    )

    listed = await world.client.get("/v1/admin/complaints?status=open", headers=admin_h)
    assert complaint_id in [c["id"] for c in listed.json()["items"]]
    before = (await world.client.get(f"/v1/users/{driver}/reputation", headers=rider_h)).json()
    decided = await world.client.post(decide, json=upheld, headers=admin_h)
    assert decided.status_code == 200, decided.text
    assert (decided.json()["status"], decided.json()["decision_reason"]) == (
        "upheld",
        "GPS shows no pickup.",
    )
    assert_problem(
        await world.client.post(decide, json=upheld, headers=admin_h), 409, "complaint-decided"
    )
    seen = await world.client.get(f"/v1/complaints/{complaint_id}", headers=driver_h)
    assert seen.json()["status"] == "upheld"

    after = (await world.client.get(f"/v1/users/{driver}/reputation", headers=rider_h)).json()
    assert after["complaints_upheld"] == before["complaints_upheld"] + 1
    assert after["complaints_received"] == 1
    assert after["score"] < before["score"]

    trail = await world.client.get(f"/v1/admin/audit?target_id={complaint_id}", headers=admin_h)
    entries = trail.json()["items"]
    assert [(e["action"], e["actor_id"], e["reason"]) for e in entries] == [
        ("decide-complaint", str(admin), "GPS shows no pickup.")
    ]
    unknown = f"/v1/admin/complaints/{uuid.uuid4()}/decide"
    assert_problem(
        await world.client.post(unknown, json=upheld, headers=admin_h), 404, "complaint-not-found"
    )


async def test_only_parties_complain_and_only_about_a_counterparty(world: TrustWorld) -> None:
    driver, _ = await world.user()
    rider, rider_h = await world.user()
    _, stranger_h = await world.user()
    match = await world.completed((driver, DRIVER), (rider, RIDER))
    post = world.client.post
    assert_problem(
        await post("/v1/complaints", json=complaint(match, driver), headers=stranger_h),
        403,
        "not-a-party",
    )
    assert_problem(
        await post("/v1/complaints", json=complaint(match, rider), headers=rider_h),
        422,
        "not-a-counterparty",
    )
    assert_problem(
        await post("/v1/complaints", json=complaint(match, driver, text=""), headers=rider_h),
        422,
        "validation-error",
    )
    assert_problem(
        await post("/v1/complaints", json=complaint(match, driver, category="x"), headers=rider_h),
        422,
        "validation-error",
    )


async def test_an_upheld_complaint_forfeits_the_deposit_and_pays_protection_exactly(
    world: TrustWorld,
) -> None:
    organizer, _ = await world.user()
    member, member_h = await world.user()
    _, admin_h = await world.admin()
    pool = await world.completed(
        (organizer, PartyRole.ORGANIZER),
        (member, PartyRole.MEMBER),
        subject_type=SubjectType.POOL,
        protected=True,
    )
    now = world.clock()
    await fund(world.sessionmaker, organizer, 10_000, "CNY", now=now)
    await fund(world.sessionmaker, member, 5_000, "CNY", now=now)
    async with world.uow as uow:
        await deposits.take_deposit(
            uow.session,
            user_id=organizer,
            subject_type=SubjectType.POOL,
            subject_id=pool,
            amount_minor=3_000,
            currency="CNY",
            expires_at=now + world.client.app.state.trust.deposit_ttl,
            now=now,
        )
        # The member paid a premium for purchase protection: it funds the insurance fund.
        await deposits.collect_premium(
            uow.session,
            transfer_id=f"premium:{pool}:{member}",
            user_id=member,
            amount_minor=1_000,
            currency="CNY",
            ref=f"pool:{pool}",
            now=now,
        )
        await uow.commit()

    filed = await world.client.post(
        "/v1/complaints",
        json={**complaint(pool, organizer), "subject_type": "pool", "category": "not_as_described"},
        headers=member_h,
    )
    decide = f"/v1/admin/complaints/{filed.json()['id']}/decide"
    # More than the insurance fund (shared by every test) can ever hold.
    too_much = {"outcome": "upheld", "reason": "Goods never shipped.", "payout_minor": 10**12}
    assert_problem(
        await world.client.post(decide, json=too_much, headers=admin_h), 402, "insufficient-funds"
    )
    mixed = {"outcome": "rejected", "reason": "No.", "forfeit_deposit": True}
    assert_problem(
        await world.client.post(decide, json=mixed, headers=admin_h), 422, "invalid-decision"
    )
    # Paid in the pool's currency only, whatever another currency's fund holds.
    await fund(world.sessionmaker, member, 1_000, "JPY", now=now)
    async with world.uow as uow:
        await deposits.collect_premium(
            uow.session,
            transfer_id=f"premium:other:{member}",
            user_id=member,
            amount_minor=1_000,
            currency="JPY",
            ref="pool:other",
            now=now,
        )
        await uow.commit()
    in_yen = {
        "outcome": "upheld",
        "reason": "Never shipped.",
        "payout_minor": 800,
        "currency": "JPY",
    }
    refused = assert_problem(
        await world.client.post(decide, json=in_yen, headers=admin_h), 422, "invalid-decision"
    )
    assert "CNY" in refused["detail"]
    decision = {
        "outcome": "upheld",
        "reason": "Goods never shipped.",
        "forfeit_deposit": True,
        "payout_minor": 800,
    }
    keyed = {**admin_h, "Idempotency-Key": f"decide-{uuid.uuid4().hex}"}
    decided = await world.client.post(decide, json=decision, headers=keyed)
    assert decided.status_code == 200, decided.text
    assert (decided.json()["forfeited_minor"], decided.json()["payout_minor"]) == (3_000, 800)
    assert decided.json()["currency"] == "CNY"
    # A retry of the same decision (the answer was lost) gets the first answer, moves nothing.
    retried = await world.client.post(decide, json=decision, headers=keyed)
    assert (retried.status_code, retried.json()) == (200, decided.json())

    async with world.sessionmaker() as session:
        member_wallet = await wallet_balance(session, member, "CNY")
        organizer_wallet = await wallet_balance(session, organizer, "CNY")
        # member: 5,000 - 1,000 premium + 3,000 deposit + 800 payout
        assert member_wallet.available_minor == 7_800
        assert (await wallet_balance(session, member, "JPY")).available_minor == 0
        assert (organizer_wallet.available_minor, organizer_wallet.held_minor) == (7_000, 0)
    # verify_ledger takes its own snapshot only in a session that has not begun yet.
    async with world.sessionmaker() as session:
        report = await verify_ledger(session)
    assert report.ok, report.problem


async def test_forfeiting_a_deposit_that_is_not_held_is_409_and_moves_nothing(
    world: TrustWorld,
) -> None:
    driver, _ = await world.user()
    rider, rider_h = await world.user()
    _, admin_h = await world.admin()
    match = await world.completed((driver, DRIVER), (rider, RIDER))
    filed = await world.client.post(
        "/v1/complaints", json=complaint(match, driver), headers=rider_h
    )
    decide = f"/v1/admin/complaints/{filed.json()['id']}/decide"
    answer = await world.client.post(
        decide,
        json={"outcome": "upheld", "reason": "No show.", "forfeit_deposit": True},
        headers=admin_h,
    )
    assert_problem(answer, 409, "deposit-not-held")
    # Nothing of the refused decision stands: the complaint is still open.
    still = await world.client.get(f"/v1/complaints/{filed.json()['id']}", headers=rider_h)
    assert still.json()["status"] == "open"


async def test_a_payout_is_only_for_members_of_protected_pools_and_admins_never_judge_themselves(
    world: TrustWorld,
) -> None:
    admin, admin_h = await world.admin()
    organizer, organizer_h = await world.user()
    member, member_h = await world.user()
    plain = await world.completed(
        (organizer, PartyRole.ORGANIZER), (member, PartyRole.MEMBER), subject_type=SubjectType.POOL
    )
    filed = await world.client.post(
        "/v1/complaints",
        json={**complaint(plain, organizer), "subject_type": "pool"},
        headers=member_h,
    )
    decide = f"/v1/admin/complaints/{filed.json()['id']}/decide"
    payout = {"outcome": "upheld", "reason": "Never shipped.", "payout_minor": 100}
    assert_problem(
        await world.client.post(decide, json=payout, headers=admin_h), 422, "invalid-decision"
    )
    for invisible in ("\u200b\u202e", "\u200d", "\u3164 \u2800"):  # a lone joiner, fillers
        blank = {"outcome": "upheld", "reason": invisible}
        assert_problem(
            await world.client.post(decide, json=blank, headers=admin_h), 422, "blank-text"
        )

    # The admin's own complaint, and banning themselves: someone else has to decide.
    own = await world.completed(
        (admin, PartyRole.MEMBER),
        (organizer, PartyRole.ORGANIZER),
        subject_type=SubjectType.POOL,
        protected=True,
    )
    mine = await world.client.post(
        "/v1/complaints",
        json={**complaint(own, organizer), "subject_type": "pool"},
        headers=admin_h,
    )
    assert mine.status_code == 201, mine.text
    self_payout = {"outcome": "upheld", "reason": "I say so", "payout_minor": 5_000}
    assert_problem(
        await world.client.post(
            f"/v1/admin/complaints/{mine.json()['id']}/decide", json=self_payout, headers=admin_h
        ),
        403,
        "conflict-of-interest",
    )
    assert_problem(
        await world.client.post(
            f"/v1/admin/users/{admin}/ban", json={"reason": "oops"}, headers=admin_h
        ),
        403,
        "conflict-of-interest",
    )
    assert (await world.client.get("/v1/me", headers=admin_h)).status_code == 200
    del organizer_h

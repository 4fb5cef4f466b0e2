"""Insurance: submitted by a user, verified or rejected by an admin (API and CLI), audited;
verification grants the driver role on the next request; an expired policy counts as absent."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from app.settings import Settings
from tests.support.ledger import COPOOL
from tests.support.trust import TrustWorld
from tests.support.users import assert_problem, unique_email
from trust import gate
from trust.policy import Action, Verdict


def policy(world: TrustWorld, days: int = 365, **extra: Any) -> dict[str, Any]:
    expires = world.clock() + timedelta(days=days)
    return {
        "provider": "PICC",
        "policy_number": "PICC-2026-0001",
        "expires_at": expires.isoformat(),
        **extra,
    }


async def can_offer_rides(world: TrustWorld, user_id: uuid.UUID) -> list[str]:
    config = world.client.app.state.trust
    async with world.sessionmaker() as session:
        decision = await gate.evaluate(
            session,
            user_id=user_id,
            action=Action.OFFER_RIDE,
            amount_minor=0,
            currency="CNY",
            now=world.clock(),
            rules=config.rules,
            params=config.score,
        )
    return [] if decision.verdict is Verdict.ALLOW else list(decision.reasons)


async def test_a_verified_policy_grants_the_driver_role_on_the_next_request(
    world: TrustWorld,
) -> None:
    user, headers = await world.user()
    admin, admin_h = await world.admin()
    submitted = await world.client.post("/v1/me/insurance", json=policy(world), headers=headers)
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["status"] == "pending"
    assert_problem(
        await world.client.post("/v1/me/insurance", json=policy(world), headers=headers),
        409,
        "insurance-pending",
    )
    assert "insurance-required" in await can_offer_rides(world, user)

    pending = await world.client.get("/v1/admin/insurance?status=pending", headers=admin_h)
    policy_id = submitted.json()["id"]
    assert policy_id in [p["id"] for p in pending.json()["items"]]
    assert_problem(
        await world.client.post(f"/v1/admin/insurance/{policy_id}/verify", headers=headers),
        403,
        "forbidden",
    )
    verified = await world.client.post(f"/v1/admin/insurance/{policy_id}/verify", headers=admin_h)
    assert verified.status_code == 200, verified.text
    assert verified.json()["status"] == "verified"
    assert_problem(
        await world.client.post(f"/v1/admin/insurance/{policy_id}/verify", headers=admin_h),
        409,
        "insurance-decided",
    )

    me = await world.client.get("/v1/me", headers=headers)  # the same token, the next request
    assert "driver" in me.json()["roles"]
    assert await can_offer_rides(world, user) == []
    rep = await world.client.get(f"/v1/users/{user}/reputation", headers=admin_h)
    assert rep.json()["insurance"]["verified"] is True
    assert "insured" in rep.json()["badges"]
    trail = await world.client.get(f"/v1/admin/audit?target_id={policy_id}", headers=admin_h)
    assert [(e["action"], e["actor_id"]) for e in trail.json()["items"]] == [
        ("verify-insurance", str(admin))
    ]

    # Once the policy expires it counts as absent: the driver role no longer suffices.
    world.clock.advance(timedelta(days=366))
    assert await can_offer_rides(world, user) == ["insurance-expired"]
    later = await world.client.get("/v1/me/trust", headers=headers)
    assert later.json()["insurance"]["verified"] is False
    assert "insurance-expired" in later.json()["reasons"]
    assert "insured" not in later.json()["badges"]


async def test_a_rejected_policy_says_why_and_grants_nothing(world: TrustWorld) -> None:
    _, headers = await world.user()
    _, admin_h = await world.admin()
    submitted = await world.client.post("/v1/me/insurance", json=policy(world), headers=headers)
    policy_id = submitted.json()["id"]
    rejected = await world.client.post(
        f"/v1/admin/insurance/{policy_id}/reject",
        json={"reason": "The number does not match the insurer's records."},
        headers=admin_h,
    )
    assert rejected.status_code == 200, rejected.text
    mine = await world.client.get("/v1/me/insurance", headers=headers)
    assert [(p["status"], p["decision_reason"]) for p in mine.json()["items"]] == [
        ("rejected", "The number does not match the insurer's records.")
    ]
    assert "driver" not in (await world.client.get("/v1/me", headers=headers)).json()["roles"]
    # Once decided, a new policy may be submitted.
    again = await world.client.post("/v1/me/insurance", json=policy(world), headers=headers)
    assert again.status_code == 201
    unknown = f"/v1/admin/insurance/{uuid.uuid4()}/verify"
    assert_problem(await world.client.post(unknown, headers=admin_h), 404, "insurance-not-found")


async def test_bad_policies_are_422(world: TrustWorld) -> None:
    _, headers = await world.user()
    for body in (
        policy(world, days=-1),
        {**policy(world), "expires_at": "2030-01-01T00:00:00"},  # no timezone
        {**policy(world), "provider": ""},
        {**policy(world), "policy_number": "x" * 65},
    ):
        answer = await world.client.post("/v1/me/insurance", json=body, headers=headers)
        assert answer.status_code == 422, (body, answer.text)


async def copool(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run the `copool` command without blocking the app's event loop."""
    process = await asyncio.create_subprocess_exec(
        COPOOL, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_cli_verifies_a_pending_policy(world: TrustWorld, settings: Settings) -> None:
    email = unique_email()
    register = await world.client.post(
        "/v1/auth/register",
        json={"email": email, "password": "correct horse battery", "display_name": "Driver"},
    )
    headers = {"Authorization": f"Bearer {register.json()['token']}"}
    await world.client.post("/v1/me/insurance", json=policy(world), headers=headers)
    env = {
        **os.environ,
        "COPOOL_DATABASE_URL": settings.database_url,
        "COPOOL_REDIS_URL": settings.redis_url,
        "COPOOL_SECRET_KEY": settings.secret_key,
    }
    code, out, err = await copool(["admin", "verify-insurance", email], env)
    assert code == 0, err
    assert "may now offer rides" in out
    assert "driver" in (await world.client.get("/v1/me", headers=headers)).json()["roles"]
    code, _, err = await copool(["admin", "verify-insurance", email], env)
    assert code == 1
    assert "no policy waiting" in err


async def test_far_future_or_blank_policies_are_422_and_an_expired_pending_one_is_set_aside(
    world: TrustWorld,
) -> None:
    admin, admin_h = await world.admin()
    _, headers = await world.user()
    for body in (
        {**policy(world), "expires_at": "9999-12-31T23:00:00-05:00"},
        policy(world, days=3_700),
    ):
        answer = await world.client.post("/v1/me/insurance", json=body, headers=headers)
        assert_problem(answer, 422, "insurance-expired")
    blank = await world.client.post(
        "/v1/me/insurance", json={**policy(world), "provider": "\u200b"}, headers=headers
    )
    assert_problem(blank, 422, "blank-text")

    short = await world.client.post("/v1/me/insurance", json=policy(world, days=1), headers=headers)
    assert short.status_code == 201
    world.clock.advance(timedelta(days=2))
    stale = await world.client.post(
        f"/v1/admin/insurance/{short.json()['id']}/verify", headers=admin_h
    )
    assert_problem(stale, 422, "insurance-expired")
    again = await world.client.post("/v1/me/insurance", json=policy(world), headers=headers)
    assert again.status_code == 201, again.text
    mine = (await world.client.get("/v1/me/insurance", headers=headers)).json()["items"]
    assert [p["status"] for p in mine] == ["pending", "rejected"]

    # An admin's own policy is verified by another admin.
    own = await world.client.post("/v1/me/insurance", json=policy(world), headers=admin_h)
    assert_problem(
        await world.client.post(f"/v1/admin/insurance/{own.json()['id']}/verify", headers=admin_h),
        403,
        "conflict-of-interest",
    )
    del admin


async def test_a_policy_answers_its_expiry_in_utc(world: TrustWorld) -> None:
    _, headers = await world.user()
    expires = world.clock() + timedelta(days=30)
    shanghai = expires.astimezone(timezone(timedelta(hours=8))).isoformat()
    submitted = await world.client.post(
        "/v1/me/insurance", json=policy(world, expires_at=shanghai), headers=headers
    )
    assert submitted.status_code == 201, submitted.text
    answered = submitted.json()["expires_at"]
    assert answered.endswith("Z"), answered
    assert datetime.fromisoformat(answered) == expires

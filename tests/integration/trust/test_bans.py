"""Bans through the admin API: the next request is refused, the gate denies, both audited."""

from __future__ import annotations

from tests.support.trust import TrustWorld
from tests.support.users import assert_problem
from trust import gate
from trust.policy import Action, Verdict


async def test_a_ban_refuses_the_next_request_and_the_gate_denies_everything(
    world: TrustWorld,
) -> None:
    user, headers = await world.user()
    admin, admin_h = await world.admin()
    assert_problem(
        await world.client.post(
            f"/v1/admin/users/{user}/ban", json={"reason": "x"}, headers=headers
        ),
        403,
        "forbidden",
    )
    banned = await world.client.post(
        f"/v1/admin/users/{user}/ban", json={"reason": "Fraudulent pools"}, headers=admin_h
    )
    assert banned.status_code == 200, banned.text
    assert banned.json() == {"user_id": str(user), "banned": True}
    assert_problem(await world.client.get("/v1/me", headers=headers), 403, "banned")

    config = world.client.app.state.trust
    async with world.sessionmaker() as session:
        for action in Action:
            decision = await gate.evaluate(
                session,
                user_id=user,
                action=action,
                amount_minor=1,
                currency="CNY",
                now=world.clock(),
                rules=config.rules,
                params=config.score,
            )
            assert decision.verdict is Verdict.DENY
            assert "banned" in decision.reasons
    public = await world.client.get(f"/v1/users/{user}/reputation", headers=admin_h)
    assert public.status_code == 200

    unbanned = await world.client.post(f"/v1/admin/users/{user}/unban", headers=admin_h)
    assert unbanned.json() == {"user_id": str(user), "banned": False}
    assert (await world.client.get("/v1/me", headers=headers)).status_code == 200

    trail = await world.client.get(f"/v1/admin/audit?target_id={user}", headers=admin_h)
    assert [(e["action"], e["actor_id"], e["reason"]) for e in trail.json()["items"]] == [
        ("unban", str(admin), None),
        ("ban", str(admin), "Fraudulent pools"),
    ]


async def test_banning_nobody_is_404_and_a_reason_is_required(world: TrustWorld) -> None:
    _, admin_h = await world.admin()
    nobody = "00000000-0000-4000-8000-000000000000"
    assert_problem(
        await world.client.post(
            f"/v1/admin/users/{nobody}/ban", json={"reason": "spam"}, headers=admin_h
        ),
        404,
        "user-not-found",
    )
    user, _ = await world.user()
    answer = await world.client.post(f"/v1/admin/users/{user}/ban", json={}, headers=admin_h)
    assert_problem(answer, 422, "validation-error")

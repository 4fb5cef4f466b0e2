"""The trust gate over real standing: ratings, completions and bans change its answer."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.support.trust import TrustWorld
from trust import gate, service
from trust.models import PartyRole
from trust.policy import Action, Decision, Verdict


async def decide(world: TrustWorld, user_id: uuid.UUID, action: Action, amount: int) -> Decision:
    config = world.client.app.state.trust
    async with world.sessionmaker() as session:
        return await gate.evaluate(
            session,
            user_id=user_id,
            action=action,
            amount_minor=amount,
            currency="CNY",
            now=world.clock(),
            rules=config.rules,
            params=config.score,
        )


async def test_new_users_leave_a_deposit_above_the_threshold_until_they_have_completions(
    world: TrustWorld,
) -> None:
    rules = world.client.app.state.trust.rules
    user, _ = await world.user()
    small = await decide(world, user, Action.JOIN_POOL, rules.new_user_amount_minor)
    assert small.verdict is Verdict.ALLOW
    large = await decide(world, user, Action.JOIN_POOL, 100_000)
    assert (large.verdict, large.reasons) == (Verdict.REQUIRE_DEPOSIT, ["new-user-deposit"])
    assert large.deposit_minor == 100_000 * rules.new_user_deposit_bp // 10_000

    for _ in range(rules.new_user_completions):
        other, _ = await world.user()
        await world.completed((user, PartyRole.RIDER), (other, PartyRole.DRIVER))
    seasoned = await decide(world, user, Action.JOIN_POOL, 100_000)
    assert seasoned.verdict is Verdict.ALLOW


async def test_a_score_below_the_floor_with_enough_ratings_is_denied(world: TrustWorld) -> None:
    rules = world.client.app.state.trust.rules
    driver, driver_h = await world.user()
    for _ in range(rules.score_floor_min_ratings + 5):
        rider, rider_h = await world.user()
        match = await world.completed((driver, PartyRole.DRIVER), (rider, PartyRole.RIDER))
        rated = await world.client.post(
            "/v1/ratings",
            json={
                "subject_type": "match",
                "subject_id": str(match),
                "ratee_id": str(driver),
                "stars": 1,
            },
            headers=rider_h,
        )
        assert rated.status_code == 201, rated.text
    world.clock.advance(timedelta(days=15))
    await service.reveal_due_ratings(world.uow, now=world.clock())
    decision = await decide(world, driver, Action.JOIN_POOL, 1)
    assert decision.verdict is Verdict.DENY
    assert decision.reasons == ["score-below-floor"]
    trust = await world.client.get("/v1/me/trust", headers=driver_h)
    assert "score-below-floor" in trust.json()["reasons"]

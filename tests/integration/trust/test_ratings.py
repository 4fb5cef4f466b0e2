"""Ratings over HTTP: parties only, once, within the window, double-blind, public once revealed."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import event

from tests.support.trust import TrustWorld
from tests.support.users import assert_problem
from trust.jobs import reveal_ratings
from trust.models import PartyRole, SubjectType

DRIVER, RIDER = PartyRole.DRIVER, PartyRole.RIDER


def rating(subject_id: Any, ratee_id: Any, stars: int, **extra: Any) -> dict[str, Any]:
    return {
        "subject_type": "match",
        "subject_id": str(subject_id),
        "ratee_id": str(ratee_id),
        "stars": stars,
        **extra,
    }


async def reputation(world: TrustWorld, user_id: Any, headers: dict[str, str]) -> dict[str, Any]:
    response = await world.client.get(f"/v1/users/{user_id}/reputation", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def public_ratings(world: TrustWorld, user_id: Any, headers: dict[str, str]) -> list[Any]:
    response = await world.client.get(f"/v1/users/{user_id}/ratings", headers=headers)
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def test_a_rating_stays_hidden_until_the_counterparty_rates_back(world: TrustWorld) -> None:
    driver, driver_h = await world.user()
    rider, rider_h = await world.user()
    match = await world.completed((driver, DRIVER), (rider, RIDER))

    first = await world.client.post(
        "/v1/ratings", json=rating(match, driver, 5, comment="Smooth ride"), headers=rider_h
    )
    assert first.status_code == 201, first.text
    assert first.json()["revealed"] is False
    # Hidden from the ratee and the public, and not yet counted in the reputation.
    assert await public_ratings(world, driver, driver_h) == []
    assert (await reputation(world, driver, rider_h))["rating_count"] == 0

    back = await world.client.post("/v1/ratings", json=rating(match, rider, 2), headers=driver_h)
    assert back.status_code == 201, back.text
    assert back.json()["revealed"] is True

    shown = await public_ratings(world, driver, rider_h)
    assert [(r["stars"], r["comment"], r["role"]) for r in shown] == [(5, "Smooth ride", "rider")]
    assert shown[0]["rater_display_name"] == "Test User"
    assert [r["stars"] for r in await public_ratings(world, rider, rider_h)] == [2]
    driver_rep = await reputation(world, driver, rider_h)
    assert (driver_rep["rating_count"], driver_rep["rating_average"]) == (1, 5.0)
    assert driver_rep["completed_count"] == 1


async def test_a_rating_is_revealed_by_the_sweep_once_the_window_closes(world: TrustWorld) -> None:
    driver, driver_h = await world.user()
    rider, rider_h = await world.user()
    match = await world.completed((driver, DRIVER), (rider, RIDER))
    answer = await world.client.post("/v1/ratings", json=rating(match, driver, 1), headers=rider_h)
    assert answer.status_code == 201, answer.text

    ctx = {"sessionmaker": world.sessionmaker, "clock": world.clock}
    assert await reveal_ratings(ctx) == 0  # the window is still open
    world.clock.advance(timedelta(days=14, seconds=1))
    assert await reveal_ratings(ctx) >= 1
    assert [r["stars"] for r in await public_ratings(world, driver, driver_h)] == [1]
    rep = await reputation(world, driver, driver_h)
    assert rep["rating_count"] == 1
    # One 1-star rating is shrunk towards the prior: far above 1, below the prior of 4.
    assert 1.0 < rep["score"] < 4.0
    assert await reveal_ratings(ctx) == 0  # revealed once, counted once


async def test_only_parties_rate_only_counterparties_once_within_the_window(
    world: TrustWorld,
) -> None:
    organizer, organizer_h = await world.user()
    member, member_h = await world.user()
    other_member, _ = await world.user()
    _, stranger_h = await world.user()
    pool = await world.completed(
        (organizer, PartyRole.ORGANIZER),
        (member, PartyRole.MEMBER),
        (other_member, PartyRole.MEMBER),
        subject_type=SubjectType.POOL,
    )

    def pool_rating(ratee: Any, stars: int = 4) -> dict[str, Any]:
        return {**rating(pool, ratee, stars), "subject_type": "pool"}

    post = world.client.post
    assert_problem(
        await post("/v1/ratings", json=pool_rating(organizer), headers=stranger_h),
        403,
        "not-a-party",
    )
    # The same id as a ride is another transaction, of which the member was no party.
    assert_problem(
        await post("/v1/ratings", json=rating(pool, organizer, 4), headers=member_h),
        403,
        "not-a-party",
    )
    assert_problem(
        await post("/v1/ratings", json=pool_rating(other_member), headers=member_h),
        422,
        "not-a-counterparty",
    )
    assert_problem(
        await post("/v1/ratings", json=pool_rating(member), headers=member_h),
        422,
        "not-a-counterparty",
    )
    assert (
        await post("/v1/ratings", json=pool_rating(organizer), headers=member_h)
    ).status_code == 201
    assert_problem(
        await post("/v1/ratings", json=pool_rating(organizer, 1), headers=member_h),
        409,
        "already-rated",
    )
    world.clock.advance(timedelta(days=15))
    assert_problem(
        await post("/v1/ratings", json=pool_rating(member), headers=organizer_h),
        409,
        "rating-window-closed",
    )


async def test_bad_ratings_are_422(world: TrustWorld) -> None:
    driver, _ = await world.user()
    rider, rider_h = await world.user()
    match = await world.completed((driver, DRIVER), (rider, RIDER))
    for body in (
        rating(match, driver, 0),
        rating(match, driver, 6),
        rating(match, driver, 5, comment="x" * 501),
        rating(match, driver, 5, comment="   "),
        rating(match, driver, 5, comment="nul\u0000"),
        {**rating(match, driver, 5), "subject_type": "car"},
    ):
        assert_problem(
            await world.client.post("/v1/ratings", json=body, headers=rider_h),
            422,
            "validation-error",
        )


async def test_comments_are_stored_without_control_characters(world: TrustWorld) -> None:
    driver, driver_h = await world.user()
    rider, rider_h = await world.user()
    match = await world.completed((driver, DRIVER), (rider, RIDER))
    comment = "  Great\u202e driver\u200b!\x07  "
    await world.client.post(
        "/v1/ratings", json=rating(match, driver, 5, comment=comment), headers=rider_h
    )
    await world.client.post("/v1/ratings", json=rating(match, rider, 5), headers=driver_h)
    shown = await public_ratings(world, driver, driver_h)
    assert shown[0]["comment"] == "Great driver!"


async def test_a_comment_with_nothing_visible_is_no_comment(world: TrustWorld) -> None:
    driver, driver_h = await world.user()
    rider, rider_h = await world.user()
    match = await world.completed((driver, DRIVER), (rider, RIDER))
    invisible = "\u200d\u200b \u3164\u202e\u2800"  # a joiner, a filler, blanks: nothing shows
    await world.client.post(
        "/v1/ratings", json=rating(match, driver, 4, comment=invisible), headers=rider_h
    )
    await world.client.post("/v1/ratings", json=rating(match, rider, 5), headers=driver_h)
    shown = await public_ratings(world, driver, driver_h)
    assert [(r["stars"], r["comment"]) for r in shown] == [(4, None)]


async def test_public_ratings_page_newest_first_and_unknown_users_are_404(
    world: TrustWorld,
) -> None:
    driver, driver_h = await world.user()
    for stars in (1, 2, 3):
        rider, rider_h = await world.user()
        match = await world.completed((driver, DRIVER), (rider, RIDER))
        await world.client.post("/v1/ratings", json=rating(match, driver, stars), headers=rider_h)
        await world.client.post("/v1/ratings", json=rating(match, rider, 5), headers=driver_h)
    first = await world.client.get(f"/v1/users/{driver}/ratings?limit=2", headers=driver_h)
    assert [r["stars"] for r in first.json()["items"]] == [3, 2]
    cursor = first.json()["next_cursor"]
    rest = await world.client.get(
        f"/v1/users/{driver}/ratings?limit=2&cursor={cursor}", headers=driver_h
    )
    assert [r["stars"] for r in rest.json()["items"]] == [1]
    assert rest.json()["next_cursor"] is None
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_problem(
        await world.client.get(f"/v1/users/{unknown}/ratings", headers=driver_h),
        404,
        "user-not-found",
    )
    assert_problem(
        await world.client.get(f"/v1/users/{unknown}/reputation", headers=driver_h),
        404,
        "user-not-found",
    )


async def test_two_parties_rating_each_other_at_once_both_end_revealed(world: TrustWorld) -> None:
    pairs = []
    for _ in range(8):
        driver, driver_h = await world.user()
        rider, rider_h = await world.user()
        match = await world.completed((driver, DRIVER), (rider, RIDER))
        pairs.append((match, driver, driver_h, rider, rider_h))
    answers = await asyncio.gather(
        *(
            world.client.post("/v1/ratings", json=rating(match, ratee, 4), headers=headers)
            for match, driver, driver_h, rider, rider_h in pairs
            for ratee, headers in ((driver, rider_h), (rider, driver_h))
        )
    )
    assert [a.status_code for a in answers] == [201] * 16
    for _, driver, driver_h, rider, _ in pairs:
        assert [r["stars"] for r in await public_ratings(world, driver, driver_h)] == [4]
        assert [r["stars"] for r in await public_ratings(world, rider, driver_h)] == [4]


async def test_reading_a_reputation_is_one_query(world: TrustWorld) -> None:
    user, headers = await world.user()
    url = f"/v1/users/{user}/reputation"
    assert (await world.client.get(url, headers=headers)).status_code == 200  # warm auth cache
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = world.client.app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert (await world.client.get(url, headers=headers)).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # SQLite's read transaction begins with a BEGIN (a deferred one: no lock); the ledger's chain
    # writer runs beside the app on the same engine (its BEGIN IMMEDIATE and its statements) and
    # is not part of the request.
    queries = [s for s in statements if not s.startswith("BEGIN") and "ledger_" not in s]
    assert len(queries) == 1, statements
    assert queries[0].startswith("SELECT")
    assert "trust_reputations" in queries[0]

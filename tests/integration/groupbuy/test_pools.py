"""Pool life cycles over HTTP on SQLite and PostgreSQL, in CNY, every amount checked against the
ledger: tipping across tiers, failure, cancel, leave, settlement run twice or at once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from redis.asyncio import Redis

from groupbuy import service
from groupbuy.admission import Admission
from payments.money import MAX_AMOUNT_MINOR
from tests.support.ledger import fund
from tests.support.pools import (
    join_ledger,
    ledger_verifies,
    member,
    open_pool,
    pool_body,
    settle,
    sweep,
    wallet,
)
from tests.support.trust import TrustWorld
from tests.support.users import assert_problem

START = 10_000


async def join(world: TrustWorld, pool_id: str, headers: dict[str, str], quantity: int) -> Any:
    return await world.client.post(
        f"/v1/pools/{pool_id}/joins", json={"quantity": quantity}, headers=headers
    )


async def test_a_pool_tipping_across_two_tiers_charges_everyone_the_final_price(
    world: TrustWorld,
) -> None:
    organizer, organizer_h = await world.user(roles=["organizer"])
    pool = await open_pool(world, organizer_h)
    assert (pool["status"], pool["current_unit_price_minor"]) == ("open", 1_000)
    assert pool["next_tier"] == {"min_quantity": 5, "unit_price_minor": 800, "quantity_needed": 5}
    a, a_h = await member(world)
    b, b_h = await member(world)

    first = await join(world, pool["id"], a_h, 3)
    assert first.status_code == 201, first.text
    assert (first.json()["held_minor"], first.json()["status"]) == (3_000, "active")
    assert await wallet(world.sessionmaker, a) == (START - 3_000, 3_000)
    second = await join(world, pool["id"], b_h, 4)  # 7: the second tier
    assert second.status_code == 201, second.text
    raised = await join(world, pool["id"], a_h, 3)  # 10: the third tier, one join raised
    assert raised.json()["id"] == first.json()["id"]
    assert (raised.json()["quantity"], raised.json()["held_minor"]) == (6, 6_000)
    assert await wallet(world.sessionmaker, a) == (START - 6_000, 6_000)
    # The raise held what it added beside the first hold: one ledger row, nothing voided.
    a_join = first.json()["id"]
    assert await join_ledger(world.sessionmaker, a_join) == [
        ("v1", 3_000, "pending"),
        ("v2", 3_000, "pending"),
    ]

    progress = (await world.client.get(f"/v1/pools/{pool['id']}", headers=a_h)).json()
    assert (progress["committed_quantity"], progress["participant_count"]) == (10, 2)
    assert progress["current_unit_price_minor"] == 600
    assert progress["next_tier"] is None

    world.clock.advance(timedelta(hours=2))
    assert await sweep(world) >= 1
    settled = (await world.client.get(f"/v1/pools/{pool['id']}", headers=a_h)).json()
    assert (settled["status"], settled["final_unit_price_minor"]) == ("succeeded", 600)
    assert settled["settled_at"] is not None
    # Everyone pays 600 a unit; the rest of each hold is released.
    assert await wallet(world.sessionmaker, a) == (START - 3_600, 0)
    assert await wallet(world.sessionmaker, b) == (START - 2_400, 0)
    # a's 3,600 from its holds oldest first: all of the first, 600 of the second (the rest
    # of it released).
    assert await join_ledger(world.sessionmaker, a_join) == [
        ("v1", 3_000, "posted"),
        ("v2", 3_000, "posted"),
        ("v1/posted", 3_000, "posted"),
        ("v2/posted", 600, "posted"),
    ]
    total = 6_000
    fee = total * world.client.app.state.settings.pool_fee_bp // 10_000
    assert await wallet(world.sessionmaker, organizer) == (total - fee, 0)
    joins = (await world.client.get("/v1/me/joins", headers=a_h)).json()["items"]
    # Nothing is held once the hold was captured (held_minor said 6,000 before).
    assert [
        (j["status"], j["charged_minor"], j["held_minor"], j["unit_price_minor"]) for j in joins
    ] == [("charged", 3_600, 0, 600)]
    # The members and the organizer can now rate each other.
    rated = await world.client.post(
        "/v1/ratings",
        json={
            "subject_type": "pool",
            "subject_id": pool["id"],
            "ratee_id": str(organizer),
            "stars": 5,
        },
        headers=b_h,
    )
    assert rated.status_code == 201, rated.text
    await ledger_verifies(world.sessionmaker)


async def test_a_pool_that_misses_its_minimum_releases_every_hold(world: TrustWorld) -> None:
    organizer, organizer_h = await world.user(roles=["organizer"])
    pool = await open_pool(world, organizer_h)
    a, a_h = await member(world)
    assert (await join(world, pool["id"], a_h, 4)).status_code == 201
    world.clock.advance(timedelta(hours=2))
    assert await settle(world, pool["id"]) == "failed"
    assert await wallet(world.sessionmaker, a) == (START, 0)
    assert await wallet(world.sessionmaker, organizer) == (0, 0)
    assert_problem(await join(world, pool["id"], a_h, 1), 409, "pool-closed")
    await ledger_verifies(world.sessionmaker)


async def test_cancel_and_leave_release_holds_and_only_the_organizer_may_cancel(
    world: TrustWorld,
) -> None:
    _organizer, organizer_h = await world.user(roles=["organizer"])
    pool = await open_pool(world, organizer_h)
    a, a_h = await member(world)
    b, b_h = await member(world)
    joined_a = (await join(world, pool["id"], a_h, 2)).json()
    assert (await join(world, pool["id"], a_h, 1)).status_code == 201  # raised: a second hold
    joined_b = (await join(world, pool["id"], b_h, 1)).json()
    assert (await join(world, pool["id"], b_h, 1)).status_code == 201  # b's second hold

    left = await world.client.delete(f"/v1/pools/{pool['id']}/joins/{joined_a['id']}", headers=a_h)
    assert (left.status_code, left.json()["status"], left.json()["held_minor"]) == (200, "left", 0)
    assert await wallet(world.sessionmaker, a) == (START, 0)
    assert await join_ledger(world.sessionmaker, joined_a["id"]) == [
        ("v1", 2_000, "voided"),
        ("v2", 1_000, "voided"),
        ("v1/voided", 2_000, "voided"),
        ("v2/voided", 1_000, "voided"),
    ]
    assert_problem(
        await world.client.delete(f"/v1/pools/{pool['id']}/joins/{joined_a['id']}", headers=a_h),
        409,
        "join-not-active",
    )
    assert_problem(
        await world.client.delete(f"/v1/pools/{pool['id']}/joins/{joined_a['id']}", headers=b_h),
        404,
        "join-not-found",
    )
    progress = (await world.client.get(f"/v1/pools/{pool['id']}", headers=a_h)).json()
    assert (progress["committed_quantity"], progress["participant_count"]) == (2, 1)

    assert_problem(
        await world.client.post(f"/v1/pools/{pool['id']}/cancel", headers=b_h), 403, "not-organizer"
    )
    assert_problem(
        await world.client.post(f"/v1/pools/{pool['id']}/close", headers=organizer_h),
        409,
        "minimum-not-reached",
    )
    cancelled = await world.client.post(f"/v1/pools/{pool['id']}/cancel", headers=organizer_h)
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert_problem(
        await world.client.post(f"/v1/pools/{pool['id']}/cancel", headers=organizer_h),
        409,
        "pool-closed",
    )
    assert await settle(world, pool["id"]) == "cancelled"
    assert await wallet(world.sessionmaker, b) == (START, 0)
    assert await wallet(world.sessionmaker, a) == (START, 0)
    assert await join_ledger(world.sessionmaker, joined_b["id"]) == [
        ("v1", 1_000, "voided"),
        ("v2", 1_000, "voided"),
        ("v1/voided", 1_000, "voided"),
        ("v2/voided", 1_000, "voided"),
    ]
    released = (await world.client.get("/v1/me/joins", headers=b_h)).json()["items"]
    assert [(j["status"], j["held_minor"]) for j in released] == [("released", 0)]
    await ledger_verifies(world.sessionmaker)


async def test_a_member_who_left_joins_again_with_holds_of_the_new_join_alone(
    world: TrustWorld,
) -> None:
    _organizer, organizer_h = await world.user(roles=["organizer"])
    pool = await open_pool(world, organizer_h)
    a, a_h = await member(world)
    _b, b_h = await member(world)
    first = (await join(world, pool["id"], a_h, 2)).json()
    assert (await join(world, pool["id"], a_h, 1)).status_code == 201
    gone = await world.client.delete(f"/v1/pools/{pool['id']}/joins/{first['id']}", headers=a_h)
    assert gone.status_code == 200, gone.text
    again = await join(world, pool["id"], a_h, 4)
    assert again.status_code == 201, again.text
    assert (again.json()["id"], again.json()["quantity"]) == (first["id"], 4)
    assert (await join(world, pool["id"], a_h, 1)).status_code == 201  # and raised again
    assert (await join(world, pool["id"], b_h, 2)).status_code == 201
    assert await wallet(world.sessionmaker, a) == (START - 5_000, 5_000)
    closed = await world.client.post(f"/v1/pools/{pool['id']}/close", headers=organizer_h)
    assert closed.status_code == 200, closed.text
    assert await settle(world, pool["id"]) == "succeeded"
    # 7 units: 800 each; a pays 4,000 for 5 from the holds of its second join (v3 and v4).
    assert await wallet(world.sessionmaker, a) == (START - 4_000, 0)
    assert await join_ledger(world.sessionmaker, first["id"]) == [
        ("v1", 2_000, "voided"),
        ("v2", 1_000, "voided"),
        ("v1/voided", 2_000, "voided"),
        ("v2/voided", 1_000, "voided"),
        ("v3", 4_000, "posted"),
        ("v4", 1_000, "voided"),  # not needed: released
        ("v3/posted", 4_000, "posted"),
        ("v4/voided", 1_000, "voided"),
    ]
    await ledger_verifies(world.sessionmaker)


async def test_a_join_past_the_cap_is_refused_and_moves_no_money_and_a_full_pool_succeeds(
    world: TrustWorld,
) -> None:
    organizer, organizer_h = await world.user(roles=["organizer"])
    pool = await open_pool(world, organizer_h)
    a, a_h = await member(world, amount_minor=30_000)
    assert (await join(world, pool["id"], a_h, 15)).status_code == 201
    b, b_h = await member(world)
    body = assert_problem(await join(world, pool["id"], b_h, 6), 409, "pool-full")
    assert body["available_quantity"] == 5
    assert await wallet(world.sessionmaker, b) == (START, 0)
    poor, poor_h = await member(world, amount_minor=100)
    assert_problem(await join(world, pool["id"], poor_h, 1), 402, "insufficient-funds")
    after = (await world.client.get(f"/v1/pools/{pool['id']}", headers=b_h)).json()
    assert after["committed_quantity"] == 15  # the refused joins reserved nothing

    filled = await join(world, pool["id"], b_h, 5)
    assert filled.status_code == 201
    full = (await world.client.get(f"/v1/pools/{pool['id']}", headers=b_h)).json()
    assert (full["status"], full["final_unit_price_minor"]) == ("succeeded", 600)
    await settle(world, pool["id"])
    assert await wallet(world.sessionmaker, b) == (START - 3_000, 0)
    del a, poor, organizer
    await ledger_verifies(world.sessionmaker)


async def test_settlement_run_twice_or_at_once_pays_once(world: TrustWorld) -> None:
    organizer, organizer_h = await world.user(roles=["organizer"])
    pool = await open_pool(world, organizer_h)
    members = [await member(world) for _ in range(6)]
    for _, headers in members:
        assert (await join(world, pool["id"], headers, 1)).status_code == 201
    closed = await world.client.post(f"/v1/pools/{pool['id']}/close", headers=organizer_h)
    assert (closed.status_code, closed.json()["final_unit_price_minor"]) == (200, 800)
    config = world.client.app.state.trust
    pool_id = uuid.UUID(pool["id"])
    await asyncio.gather(
        *(
            service.settle_pool(
                world.uow, pool_id=pool_id, config=config, now=world.clock(), chunk=2
            )
            for _ in range(3)
        )
    )
    await settle(world, pool["id"])
    await sweep(world)
    total = 6 * 800
    fee = total * world.client.app.state.settings.pool_fee_bp // 10_000
    assert await wallet(world.sessionmaker, organizer) == (total - fee, 0)
    for user_id, _ in members:
        assert await wallet(world.sessionmaker, user_id) == (START - 800, 0)
    await ledger_verifies(world.sessionmaker)


async def test_bad_pools_are_422_and_only_organizers_open_pools(world: TrustWorld) -> None:
    _, organizer_h = await world.user(roles=["organizer"])
    _, member_h = await world.user()
    soon = world.clock() + timedelta(hours=1)
    assert_problem(
        await world.client.post("/v1/pools", json=pool_body(soon), headers=member_h),
        403,
        "forbidden",
    )
    bad_tiers = [
        [{"min_quantity": 2, "unit_price_minor": 1_000}],
        [
            {"min_quantity": 1, "unit_price_minor": 1_000},
            {"min_quantity": 5, "unit_price_minor": 1_200},
        ],
        [
            {"min_quantity": 1, "unit_price_minor": 1_000},
            {"min_quantity": 1, "unit_price_minor": 900},
        ],
        [{"min_quantity": i + 1, "unit_price_minor": 1_000 - i} for i in range(11)],
    ]
    for tiers in bad_tiers:
        answer = await world.client.post(
            "/v1/pools", json=pool_body(soon, tiers=tiers), headers=organizer_h
        )
        assert answer.status_code == 422, answer.text
    for extra in (
        {"min_quantity": 30},
        {"deadline": (world.clock() + timedelta(minutes=1)).isoformat()},
        {"deadline": (world.clock() + timedelta(days=31)).isoformat()},
        {"deadline": "2030-01-01T00:00:00"},
        {"currency": "XAU"},
        {"title": " "},
    ):
        answer = await world.client.post(
            "/v1/pools", json={**pool_body(soon), **extra}, headers=organizer_h
        )
        assert answer.status_code == 422, (extra, answer.text)
    unknown = f"/v1/pools/{uuid.uuid4()}"
    assert_problem(await world.client.get(unknown, headers=member_h), 404, "pool-not-found")
    assert_problem(
        await world.client.post(f"{unknown}/joins", json={"quantity": 1}, headers=member_h),
        404,
        "pool-not-found",
    )


async def test_a_pool_answers_utc_shows_clean_text_and_counts_its_premium_in_its_value(
    world: TrustWorld,
) -> None:
    organizer, organizer_h = await world.user(roles=["organizer"])
    _, member_h = await world.user()
    soon = world.clock() + timedelta(hours=1)
    # (a new organizer's deposit for a pool this valuable)
    await fund(world.sessionmaker, organizer, MAX_AMOUNT_MINOR // 4, "CNY", now=world.clock())
    in_beijing = soon.astimezone(timezone(timedelta(hours=8)))
    body = pool_body(
        in_beijing,
        title="\u202eTea\u200b \u0007leaves",
        description="Line one\nline two\u2060",
        pickup={"lat": 31.2, "lon": 121.4, "label": "North\u200e gate"},
    )
    created = await world.client.post("/v1/pools", json=body, headers=organizer_h)
    assert created.status_code == 201, created.text
    pool = created.json()
    read = (await world.client.get(f"/v1/pools/{pool['id']}", headers=member_h)).json()
    for answer in (pool, read):
        assert answer["deadline"].endswith("Z"), answer["deadline"]
        assert datetime.fromisoformat(answer["deadline"]) == soon
        assert answer["title"] == "Tea leaves"
        assert answer["description"] == "Line one\nline two"
        assert answer["pickup"]["label"] == "North gate"
    for title in ("\u200b\u200d\u2060", "\u202e\u3164", "\u034f\u17b4\u17b5"):
        assert_problem(
            await world.client.post(
                "/v1/pools", json=pool_body(soon, title=title), headers=organizer_h
            ),
            422,
            "invalid-pool",
        )
    # Worth exactly the largest amount copool moves: a protected pool's premium would put a
    # join of all of it past that, so it is refused when it opens, not when it fills.
    largest = {"tiers": [{"min_quantity": 1, "unit_price_minor": MAX_AMOUNT_MINOR // 10}],
               "min_quantity": 1, "max_quantity": 10}  # fmt: skip
    assert_problem(
        await world.client.post(
            "/v1/pools", json=pool_body(soon, protected=True, **largest), headers=organizer_h
        ),
        422,
        "invalid-pool",
    )
    unprotected = await world.client.post(
        "/v1/pools", json=pool_body(soon, **largest), headers=organizer_h
    )
    assert unprotected.status_code == 201, unprotected.text


async def test_pools_are_found_near_a_place(world: TrustWorld) -> None:
    _, organizer_h = await world.user(roles=["organizer"])
    shanghai = {"lat": 31.2304, "lon": 121.4737, "label": "People's Square"}
    pudong = {"lat": 31.2213, "lon": 121.5440, "label": "Lujiazui"}
    beijing = {"lat": 39.9042, "lon": 116.4074, "label": "Tiananmen"}
    ids = {}
    for name, pickup in (("shanghai", shanghai), ("pudong", pudong), ("beijing", beijing)):
        ids[name] = (await open_pool(world, organizer_h, pickup=pickup))["id"]
    found = await world.client.get(
        "/v1/pools?status=open&near=31.2304,121.4737&radius_km=10", headers=organizer_h
    )
    assert found.status_code == 200, found.text
    items = found.json()["items"]
    assert {p["id"] for p in items} >= {ids["shanghai"], ids["pudong"]}
    assert ids["beijing"] not in {p["id"] for p in items}
    assert all(p["distance_km"] <= 10 for p in items)
    for near in ("91,0", "1_0,2", "\u0661,\u0662", "nan,0", "inf,0", "1e1,2", "31.2,", "31.2"):
        bad = await world.client.get("/v1/pools", params={"near": near}, headers=organizer_h)
        assert_problem(bad, 422, "validation-error")
    spaced = await world.client.get(
        "/v1/pools",
        params={"status": "open", "near": " 31.2304 , 121.4737 ", "radius_km": "10"},
        headers=organizer_h,
    )
    assert {p["id"] for p in spaced.json()["items"]} == {p["id"] for p in items}


async def test_a_join_retried_with_its_key_or_rerun_after_a_crash_adds_nothing(
    world: TrustWorld,
) -> None:
    _, organizer_h = await world.user(roles=["organizer"])
    pool = await open_pool(world, organizer_h)
    a, a_h = await member(world)
    keyed = {**a_h, "Idempotency-Key": f"join-{uuid.uuid4().hex}"}
    first = await world.client.post(
        f"/v1/pools/{pool['id']}/joins", json={"quantity": 2}, headers=keyed
    )
    again = await world.client.post(
        f"/v1/pools/{pool['id']}/joins", json={"quantity": 2}, headers=keyed
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    # A run of the same request after a crash (its key's lease over) finds its own work done.
    rerun = await service.join_pool(
        world.uow,
        pool_id=uuid.UUID(pool["id"]),
        user_id=a,
        quantity=3,
        request_id="req-1",
        config=world.client.app.state.trust,
        schedule=None,
        admission=None,
        now=world.clock(),
    )
    repeat = await service.join_pool(
        world.uow,
        pool_id=uuid.UUID(pool["id"]),
        user_id=a,
        quantity=3,
        request_id="req-1",
        config=world.client.app.state.trust,
        schedule=None,
        admission=None,
        now=world.clock(),
    )
    assert (rerun.quantity, repeat.quantity) == (5, 5)
    assert await wallet(world.sessionmaker, a) == (START - 5_000, 5_000)


async def test_a_rerun_of_the_join_that_filled_the_pool_answers_that_join(
    world: TrustWorld, redis_url: str
) -> None:
    """Before, the rerun after a crash of the join that filled (and so decided) the pool was
    409 pool-closed, although that join had been made."""
    _, organizer_h = await world.user(roles=["organizer"])
    pool = await open_pool(world, organizer_h, max_quantity=10)
    pool_id = uuid.UUID(pool["id"])
    a, _ = await member(world)
    redis = Redis.from_url(redis_url)
    admission = Admission(redis, plenty=1)  # every join counted: the gate closes once full
    for attempt in range(3):  # the first fills the pool; the reruns find it made
        joined = await service.join_pool(
            world.uow,
            pool_id=pool_id,
            user_id=a,
            quantity=10,
            request_id="filled-it",
            config=world.client.app.state.trust,
            schedule=None,
            admission=admission,
            now=world.clock(),
        )
        assert (joined.quantity, joined.last_request) == (10, "filled-it"), attempt
    await redis.aclose()
    state = (await world.client.get(f"/v1/pools/{pool_id}", headers=organizer_h)).json()
    assert (state["status"], state["committed_quantity"]) == ("succeeded", 10)
    assert await wallet(world.sessionmaker, a) == (START - 10_000, 10_000)
    _, b_h = await member(world)
    late = await world.client.post(f"/v1/pools/{pool_id}/joins", json={"quantity": 1}, headers=b_h)
    assert late.status_code == 409, late.text


async def test_close_and_cancel_retried_with_their_key_answer_the_first_answer(
    world: TrustWorld,
) -> None:
    """Both move money (close settles, cancel releases every hold): a retry after a lost answer
    gets that answer, not 409 pool-closed."""
    _, organizer_h = await world.user(roles=["organizer"])
    for action, status in (("close", "succeeded"), ("cancel", "cancelled")):
        pool = await open_pool(world, organizer_h)
        _, a_h = await member(world)
        assert (await join(world, pool["id"], a_h, 5)).status_code == 201
        headers = {**organizer_h, "Idempotency-Key": f"{action}-{pool['id']}"}
        path = f"/v1/pools/{pool['id']}/{action}"
        first = await world.client.post(path, headers=headers)
        again = await world.client.post(path, headers=headers)
        assert (first.status_code, first.json()["status"]) == (200, status), first.text
        assert (again.status_code, again.content) == (200, first.content)
        assert again.headers["idempotent-replayed"] == "true"
        bad = await world.client.post(path, headers={**organizer_h, "Idempotency-Key": "bad key!"})
        assert_problem(bad, 422, "validation-error")
    await ledger_verifies(world.sessionmaker)


async def test_a_join_keeps_a_bounded_number_of_holds(
    world: TrustWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "MAX_JOIN_HOLDS", 3)
    _organizer, organizer_h = await world.user(roles=["organizer"])
    pool = await open_pool(world, organizer_h)
    a, a_h = await member(world)
    first = (await join(world, pool["id"], a_h, 1)).json()
    for _ in range(3):  # the third raise would be the fourth hold
        assert (await join(world, pool["id"], a_h, 1)).status_code == 201
    assert await wallet(world.sessionmaker, a) == (START - 4_000, 4_000)
    assert await join_ledger(world.sessionmaker, first["id"]) == [
        ("v1", 1_000, "voided"),
        ("v2", 1_000, "voided"),
        ("v3", 1_000, "voided"),
        ("v1/voided", 1_000, "voided"),
        ("v2/voided", 1_000, "voided"),
        ("v3/voided", 1_000, "voided"),
        ("v4", 4_000, "pending"),  # the whole hold again, in one
    ]
    assert (await join(world, pool["id"], a_h, 1)).status_code == 201  # one more: beside it
    _b, b_h = await member(world)
    assert (await join(world, pool["id"], b_h, 1)).status_code == 201
    assert (
        await world.client.post(f"/v1/pools/{pool['id']}/close", headers=organizer_h)
    ).status_code == 200
    assert await settle(world, pool["id"]) == "succeeded"
    # 6 units at 800: a pays 4,000 for 5, all of v4 and nothing of v5.
    assert await wallet(world.sessionmaker, a) == (START - 4_000, 0)
    assert (await join_ledger(world.sessionmaker, first["id"]))[-3:] == [
        ("v5", 1_000, "voided"),
        ("v4/posted", 4_000, "posted"),
        ("v5/voided", 1_000, "voided"),
    ]
    await ledger_verifies(world.sessionmaker)


async def test_a_protected_pools_premium_is_charged_from_a_joins_several_holds(
    world: TrustWorld,
) -> None:
    _organizer, organizer_h = await world.user(roles=["organizer"])
    pool = await open_pool(world, organizer_h, protected=True)
    a, a_h = await member(world)
    _b, b_h = await member(world)
    first = (await join(world, pool["id"], a_h, 3)).json()
    assert first["held_minor"] == 3_060  # 3 x 1,000 and the 2 % premium
    raised = (await join(world, pool["id"], a_h, 3)).json()
    assert raised["held_minor"] == 6_120
    assert (await join(world, pool["id"], b_h, 4)).status_code == 201  # 10: 600 a unit
    world.clock.advance(timedelta(hours=2))
    assert await sweep(world) >= 1
    # a pays 6 x 600 and its premium, 72: all of the first hold, 612 of the second.
    assert await wallet(world.sessionmaker, a) == (START - 3_672, 0)
    assert await join_ledger(world.sessionmaker, first["id"]) == [
        ("v1", 3_060, "posted"),
        ("v2", 3_060, "posted"),
        ("v1/posted", 3_060, "posted"),
        ("v2/posted", 612, "posted"),
        ("premium", 72, "posted"),  # from the escrow to the insurance fund
    ]
    await ledger_verifies(world.sessionmaker)

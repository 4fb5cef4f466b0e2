"""Rides under real concurrency, PostgreSQL only (SQLite's single writer proves nothing here):
matchers of one region, and of two neighbouring regions sharing an offer, running at once never
propose a seat twice; accepts racing over separate connections never overbook."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import timedelta

import h3
from sqlalchemy import select

from rides import service
from rides.models import LIVE_MATCH, Match, MatchStatus
from tests.support.locks import lock_waiters
from tests.support.pools import ledger_verifies, wallet
from tests.support.rides import (
    NEAR_AIRPORT,
    NEAR_CITY,
    across_a_region_border,
    insured_driver,
    match,
    new_area,
    offer_body,
    post,
    request_body,
    rider,
)
from tests.support.trust import TrustWorld

MATCHES = Match.__table__  # type: ignore[attr-defined]


async def live_matches(world: TrustWorld, offer_ids: list[str]) -> list[Match]:
    async with world.sessionmaker() as session:
        rows = await session.execute(
            select(MATCHES).where(
                MATCHES.c.offer_id.in_([uuid.UUID(o) for o in offer_ids]),
                MATCHES.c.status.in_(LIVE_MATCH),
            )
        )
    return [Match(**row._mapping) for row in rows.all()]


def assert_no_seat_twice(matches: list[Match], seats: dict[str, int]) -> None:
    per_offer = Counter(str(m.offer_id) for m in matches)
    assert all(per_offer[offer] <= free for offer, free in seats.items()), per_offer
    per_request = Counter(m.request_id for m in matches)
    assert all(count == 1 for count in per_request.values()), per_request


async def test_matchers_of_one_region_at_once_propose_each_seat_once(pg_world: TrustWorld) -> None:
    world = pg_world
    area = new_area()
    offers = []
    for _ in range(3):
        _, driver_h = await insured_driver(world)
        body = offer_body(world, area, seats=1)
        offers.append(await post(world, "/v1/rides/offers", body, driver_h))
    for _ in range(6):
        _, rider_h = await rider(world)
        await post(world, "/v1/rides/requests", request_body(world, area), rider_h)

    made = await asyncio.gather(*(match(world, area) for _ in range(4)))
    assert sum(made) == 3, made  # three seats, six riders who all fit: three proposals
    proposals = await live_matches(world, [o["id"] for o in offers])
    assert len(proposals) == 3
    assert_no_seat_twice(proposals, {o["id"]: 1 for o in offers})


async def test_matchers_of_neighbouring_regions_sharing_an_offer_propose_its_seat_once(
    pg_world: TrustWorld,
) -> None:
    world = pg_world
    config = world.client.app.state.rides
    west, east = across_a_region_border(new_area(), config)
    regions = [
        service.region_of(side.at(NEAR_CITY)["lat"], side.at(NEAR_CITY)["lon"], config)
        for side in (west, east)
    ]
    assert h3.are_neighbor_cells(*regions)
    _, driver_h = await insured_driver(world)
    body = offer_body(
        world, west, seats=1, origin=west.at(NEAR_CITY), destination=west.at(NEAR_AIRPORT)
    )
    offer = await post(world, "/v1/rides/offers", body, driver_h)
    for side in (west, east):
        _, rider_h = await rider(world)
        await post(world, "/v1/rides/requests", request_body(world, side), rider_h)

    for _ in range(3):  # each round: both regions at once; the seat is proposed once in all
        made = await asyncio.gather(
            *(
                service.match_regions(world.uow, regions=[region], config=config, now=world.clock())
                for region in regions
            )
        )
        assert sum(made) <= 1, made
    proposals = await live_matches(world, [offer["id"]])
    assert len(proposals) == 1
    assert_no_seat_twice(proposals, {offer["id"]: 1})


async def test_accepts_racing_for_two_seats_over_separate_connections(
    pg_world: TrustWorld,
) -> None:
    """Six proposals for a two-seat offer (as stale matchers could once have made), accepted at
    once: two win, four are 409 `no-seats-left` and hold nothing; the ledger verifies."""
    world = pg_world
    area = new_area()
    driver, driver_h = await insured_driver(world)
    offer = await post(world, "/v1/rides/offers", offer_body(world, area, seats=2), driver_h)
    riders = [await rider(world, 10_000) for _ in range(6)]
    now = world.clock()
    match_ids = []
    async with world.uow as uow:
        for rider_id, rider_h in riders:
            request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
            proposed = Match(
                offer_id=uuid.UUID(offer["id"]),
                request_id=uuid.UUID(request["id"]),
                driver_id=driver,
                rider_id=rider_id,
                seats=1,
                status=MatchStatus.PROPOSED.value,
                pickup_eta=now + timedelta(hours=2, minutes=5),
                dropoff_eta=now + timedelta(hours=3),
                detour_km=1.0,
                fare_minor=3_000,
                currency="CNY",
                expires_at=now + timedelta(hours=1),
                created_at=now,
                updated_at=now,
            )
            uow.session.add(proposed)
            match_ids.append(proposed.id)
        await uow.commit()

    answers = await asyncio.gather(
        *(
            world.client.post(f"/v1/rides/matches/{match_id}/accept", headers=driver_h)
            for match_id in match_ids
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 200, 409, 409, 409, 409]
    assert all(a.json()["type"].endswith("no-seats-left") for a in answers if a.status_code == 409)
    seen = await world.client.get(f"/v1/rides/offers/{offer['id']}", headers=driver_h)
    assert seen.json()["seats_free"] == 0
    held = sorted([(await wallet(world.sessionmaker, rider_id)) for rider_id, _ in riders])
    assert held == [(7_000, 3_000)] * 2 + [(10_000, 0)] * 4
    await ledger_verifies(world.sessionmaker)


async def test_an_accept_and_a_withdrawal_at_once_lock_the_offer_first_and_end_cleanly(
    pg_world: TrustWorld,
) -> None:
    """Every ride use case locks offer, match, request in that order: while another transaction
    holds the offer's row, an accept and the rider's withdrawal both wait there holding nothing
    (before, the accept held the match and the withdrawal the request: a deadlock each time they
    met). Whichever goes first, the rider ends with every unit back."""
    world = pg_world
    area = new_area()
    driver, driver_h = await insured_driver(world)
    rider_id, rider_h = await rider(world, 50_000)
    offer = await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    match_id = uuid.UUID(seen.json()["match"]["id"])
    now = world.clock()
    config = world.client.app.state
    offers, requests = service.OFFERS, service.REQUESTS

    async with world.uow as holder:
        await holder.session.execute(
            select(offers.c.id).where(offers.c.id == uuid.UUID(offer["id"])).with_for_update()
        )
        accepting = asyncio.create_task(
            service.accept_match(
                world.uow, match_id=match_id, driver_id=driver, trust_config=config.trust, now=now
            )
        )
        withdrawing = asyncio.create_task(
            service.cancel_request(
                world.uow,
                request_id=uuid.UUID(request["id"]),
                rider_id=rider_id,
                config=config.rides,
                now=now,
            )
        )
        await lock_waiters(world.sessionmaker, 2)  # both wait for the offer's row
        assert not accepting.done()
        assert not withdrawing.done()
        async with world.uow as probe:  # neither holds the match or the request meanwhile
            for query in (
                select(MATCHES.c.id).where(MATCHES.c.id == match_id),
                select(requests.c.id).where(requests.c.id == uuid.UUID(request["id"])),
            ):
                await probe.session.execute(query.with_for_update(nowait=True))
        await holder.commit()
    outcomes = await asyncio.gather(accepting, withdrawing, return_exceptions=True)
    assert not isinstance(outcomes[1], BaseException), outcomes
    assert outcomes[1].status == "cancelled"
    assert await wallet(world.sessionmaker, rider_id) == (50_000, 0)
    await ledger_verifies(world.sessionmaker)

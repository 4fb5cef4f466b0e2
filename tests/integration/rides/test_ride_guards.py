"""Rules that keep a ride's money right at its edges (both backends): a rider cannot cancel an
accepted ride once its pickup time has come, a new driver's dear ride holds the driver's deposit
too, and no offer can earn a fare larger than the ledger moves (nor stop its region's matching)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import update

from matching.fare import settle_match
from payments.jobs import expire_holds
from payments.money import MAX_AMOUNT_MINOR, fee_minor
from rides.models import Offer
from rides.service import HOLD_GRACE
from tests.support.ledger import fund
from tests.support.pools import ledger_verifies, wallet, worker_ctx
from tests.support.rides import (
    expire,
    insured_driver,
    match,
    new_area,
    offer_body,
    post,
    request_body,
    rider,
)
from tests.support.trust import TrustWorld
from tests.support.users import assert_problem
from trust.jobs import release_deposits

FUNDS = 200_000
BEIJING = {"lat": 39.9042, "lon": 116.4074}


async def proposed(world: TrustWorld, request_id: str, rider_h: dict[str, str]) -> dict[str, str]:
    seen = await world.client.get(f"/v1/rides/requests/{request_id}", headers=rider_h)
    assert seen.status_code == 200, seen.text
    body: dict[str, str] = seen.json()["match"]
    return body


async def test_a_rider_cannot_cancel_an_accepted_ride_once_its_pickup_time_has_come(
    world: TrustWorld,
) -> None:
    """Before, the rider's cancel at that point paid only the late fee of a ride taken."""
    area = new_area()
    driver, driver_h = await insured_driver(world)
    rider_id, rider_h = await rider(world, FUNDS)
    await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    ride = await proposed(world, request["id"], rider_h)
    accepted = await world.client.post(f"/v1/rides/matches/{ride['id']}/accept", headers=driver_h)
    assert accepted.status_code == 200, accepted.text
    fare = accepted.json()["fare_minor"]

    world.clock.advance(timedelta(hours=2, minutes=30))  # past the pickup time
    for path in (
        f"/v1/rides/matches/{ride['id']}/cancel",
        f"/v1/rides/requests/{request['id']}/cancel",
    ):
        refused = await world.client.post(path, headers=rider_h)
        assert_problem(refused, 409, "ride-under-way")
    assert await wallet(world.sessionmaker, rider_id) == (FUNDS - fare, fare)

    done = await world.client.post(f"/v1/rides/matches/{ride['id']}/complete", headers=driver_h)
    assert done.status_code == 200, done.text
    split = settle_match(fare, platform_fee_bps=world.client.app.state.rides.fee_bp)
    assert await wallet(world.sessionmaker, driver) == (split.payout_minor, 0)
    assert await wallet(world.sessionmaker, rider_id) == (FUNDS - fare, 0)
    await ledger_verifies(world.sessionmaker)


async def test_a_new_driver_accepting_a_dear_ride_holds_a_deposit_or_is_402(
    own_world: TrustWorld,
) -> None:
    """The gate asks a driver with few completions for a deposit on a dear fare: without the
    money the accept is 402 and takes no seat; with it the deposit is held, and after the ride
    it stays held through the complaint window, then comes back."""
    world = own_world  # (the deposit sweep looks at every deposit)
    area = new_area()
    rules = world.client.app.state.trust.rules
    driver, driver_h = await insured_driver(world)
    rider_id, rider_h = await rider(world, FUNDS)
    offer = await post(
        world, "/v1/rides/offers", offer_body(world, area, price_per_km_minor=2_000), driver_h
    )
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    ride = await proposed(world, request["id"], rider_h)
    fare = int(ride["fare_minor"])
    assert fare > rules.new_user_amount_minor
    deposit = fee_minor(fare, rules.new_user_deposit_bp)

    broke = await world.client.post(f"/v1/rides/matches/{ride['id']}/accept", headers=driver_h)
    assert_problem(broke, 402, "insufficient-funds")
    seats = await world.client.get(f"/v1/rides/offers/{offer['id']}", headers=driver_h)
    assert seats.json()["seats_free"] == 3
    assert await wallet(world.sessionmaker, rider_id) == (FUNDS, 0)

    await fund(world.sessionmaker, driver, deposit, "CNY", now=world.clock())
    accepted = await world.client.post(f"/v1/rides/matches/{ride['id']}/accept", headers=driver_h)
    assert accepted.status_code == 200, accepted.text
    assert await wallet(world.sessionmaker, driver) == (0, deposit)

    world.clock.advance(timedelta(hours=3))
    done = await world.client.post(f"/v1/rides/matches/{ride['id']}/complete", headers=driver_h)
    assert done.status_code == 200, done.text
    split = settle_match(fare, platform_fee_bps=world.client.app.state.rides.fee_bp)
    assert await wallet(world.sessionmaker, driver) == (split.payout_minor, deposit)
    world.clock.advance(world.client.app.state.trust.rating_window + timedelta(minutes=1))
    assert await release_deposits(worker_ctx(world)) >= 1
    assert await wallet(world.sessionmaker, driver) == (split.payout_minor + deposit, 0)
    await ledger_verifies(world.sessionmaker)


async def test_an_offer_that_could_earn_more_than_the_ledger_moves_is_422(
    world: TrustWorld,
) -> None:
    area = new_area()
    _, driver_h = await insured_driver(world)
    # The schema's largest price per km, 8 seats, Shanghai to Beijing: over 10^12 minor units.
    body = offer_body(
        world, area, destination=BEIJING, origin={"lat": 31.2304, "lon": 121.4737},
        price_per_km_minor=MAX_AMOUNT_MINOR // 10_000, seats=8, max_detour_km=200,
    )  # fmt: skip
    answer = await world.client.post("/v1/rides/offers", json=body, headers=driver_h)
    assert_problem(answer, 422, "invalid-ride")
    assert "price_per_km_minor x seats" in answer.json()["errors"][0]["message"]
    cheaper = {**body, "price_per_km_minor": 10_000}
    assert (
        await world.client.post("/v1/rides/offers", json=cheaper, headers=driver_h)
    ).status_code == 201


async def test_a_proposal_whose_fare_the_ledger_cannot_move_is_skipped_and_the_rest_matched(
    world: TrustWorld,
) -> None:
    """An offer stored before fares were bounded: before, its fare raised inside the batch and
    the whole region went unmatched, run after run."""
    area = new_area()
    _, old_h = await insured_driver(world)
    _, new_h = await insured_driver(world)
    one_seat = {"seats": 1}
    old = await post(world, "/v1/rides/offers", offer_body(world, area, **one_seat), old_h)
    fresh = await post(world, "/v1/rides/offers", offer_body(world, area, **one_seat), new_h)
    async with world.sessionmaker() as session:
        await session.execute(
            update(Offer.__table__)  # type: ignore[arg-type]
            .where(Offer.__table__.c.id == uuid.UUID(old["id"]))  # type: ignore[attr-defined]
            .values(price_per_km_minor=MAX_AMOUNT_MINOR)
        )
        await session.commit()
    riders = [await rider(world, FUNDS) for _ in range(2)]
    requests = [
        await post(world, "/v1/rides/requests", request_body(world, area), headers)
        for _, headers in riders
    ]
    assert await match(world, area) == 1
    offers = set()
    for request, (_, headers) in zip(requests, riders, strict=True):
        seen = (
            await world.client.get(f"/v1/rides/requests/{request['id']}", headers=headers)
        ).json()
        if seen["match"] is not None:
            offers.add(seen["match"]["offer_id"])
    assert offers == {fresh["id"]}


async def test_an_accepted_ride_never_completed_ends_when_its_hold_lapses_and_charges_nobody(
    own_world: TrustWorld,
) -> None:
    """Before, the match stayed accepted for ever once its fare hold lapsed (complete and cancel
    were both refused). Ended by the rides sweep, whether or not the ledger's expiry sweep
    released the hold first."""
    world = own_world  # (both sweeps look at every hold and every ride)
    for ledger_first in (True, False):
        area = new_area()
        _, driver_h = await insured_driver(world)
        rider_id, rider_h = await rider(world, FUNDS)
        offer = await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
        request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
        assert await match(world, area) == 1
        ride = await proposed(world, request["id"], rider_h)
        accepted = await world.client.post(
            f"/v1/rides/matches/{ride['id']}/accept", headers=driver_h
        )
        assert accepted.status_code == 200, accepted.text
        world.clock.advance(HOLD_GRACE + timedelta(hours=3))
        if ledger_first:
            await expire_holds(worker_ctx(world))
            assert await wallet(world.sessionmaker, rider_id) == (FUNDS, 0)
        await expire(world)
        assert await wallet(world.sessionmaker, rider_id) == (FUNDS, 0)
        seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
        assert seen.json()["status"] == "expired"
        listed = await world.client.get(f"/v1/rides/offers/{offer['id']}/matches", headers=driver_h)
        assert [(m["status"], m["cancelled_by"]) for m in listed.json()["items"]] == [
            ("cancelled", "unfinished")
        ]
        late = await world.client.post(f"/v1/rides/matches/{ride['id']}/complete", headers=driver_h)
        assert_problem(late, 409, "match-conflict")
        await expire_holds(worker_ctx(world))
        assert await wallet(world.sessionmaker, rider_id) == (FUNDS, 0)
    await ledger_verifies(world.sessionmaker)


async def test_a_ride_its_driver_never_completes_can_be_called_off_by_the_rider_once_overdue(
    world: TrustWorld,
) -> None:
    """From the late window past its drop-off time an uncompleted ride is the driver's doing:
    the rider's cancel releases the whole fare, forfeits the new driver's deposit to the rider
    and counts against the driver."""
    area = new_area()
    rules = world.client.app.state.trust.rules
    late_window = world.client.app.state.rides.late_cancel_window
    driver, driver_h = await insured_driver(world)
    rider_id, rider_h = await rider(world, FUNDS)
    await post(
        world, "/v1/rides/offers", offer_body(world, area, price_per_km_minor=2_000), driver_h
    )
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    ride = await proposed(world, request["id"], rider_h)
    deposit = fee_minor(int(ride["fare_minor"]), rules.new_user_deposit_bp)
    await fund(world.sessionmaker, driver, deposit, "CNY", now=world.clock())
    accepted = await world.client.post(f"/v1/rides/matches/{ride['id']}/accept", headers=driver_h)
    assert accepted.status_code == 200, accepted.text
    dropoff = datetime.fromisoformat(accepted.json()["dropoff_eta"])

    world.clock.advance(dropoff + late_window - timedelta(seconds=1) - world.clock())
    early = await world.client.post(f"/v1/rides/matches/{ride['id']}/cancel", headers=rider_h)
    assert_problem(early, 409, "ride-under-way")
    world.clock.advance(timedelta(seconds=1))
    ended = await world.client.post(f"/v1/rides/matches/{ride['id']}/cancel", headers=rider_h)
    assert ended.status_code == 200, ended.text
    assert (ended.json()["status"], ended.json()["fee_minor"]) == ("cancelled", 0)
    # The whole fare and the rider's own deposit back, and the driver's deposit too.
    assert await wallet(world.sessionmaker, rider_id) == (FUNDS + deposit, 0)
    assert await wallet(world.sessionmaker, driver) == (0, 0)
    await ledger_verifies(world.sessionmaker)

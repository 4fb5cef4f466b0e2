"""How rides end other than by completion: a no-show, a driver calling the trip off, a rider
withdrawing, an offer departing; and the worker's jobs over every region (both backends)."""

from __future__ import annotations

from datetime import timedelta

from payments.money import fee_minor
from tests.support.ledger import fund
from tests.support.pools import ledger_verifies, wallet
from tests.support.rides import (
    expire,
    insured_driver,
    match,
    match_all,
    new_area,
    offer_body,
    post,
    request_body,
    rider,
)
from tests.support.trust import TrustWorld
from tests.support.users import assert_problem

FUNDS = 100_000


async def accepted(world: TrustWorld, request: dict[str, str], rider_h: dict[str, str],
                   driver_h: dict[str, str]) -> dict[str, object]:  # fmt: skip
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    proposed = seen.json()["match"]
    answer = await world.client.post(f"/v1/rides/matches/{proposed['id']}/accept", headers=driver_h)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


async def test_a_no_show_charges_the_fee_and_forfeits_the_deposit_to_the_driver(
    world: TrustWorld,
) -> None:
    """A dear ride (more than a new user's threshold): accepting it also holds the new rider's
    deposit, which a no-show forfeits to the driver with the late fee, and the new driver's,
    which comes back."""
    area = new_area()
    rules = world.client.app.state.trust.rules
    driver, driver_h = await insured_driver(world)
    await fund(world.sessionmaker, driver, FUNDS, "CNY", now=world.clock())
    rider_id, rider_h = await rider(world, 200_000)
    dear = offer_body(world, area, price_per_km_minor=2_000)
    await post(world, "/v1/rides/offers", dear, driver_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    ride = await accepted(world, request, rider_h, driver_h)
    fare = int(str(ride["fare_minor"]))
    assert fare > rules.new_user_amount_minor
    deposit = fee_minor(fare, rules.new_user_deposit_bp)
    assert await wallet(world.sessionmaker, rider_id) == (200_000 - fare - deposit, fare + deposit)
    assert await wallet(world.sessionmaker, driver) == (FUNDS - deposit, deposit)
    too_soon = await world.client.post(f"/v1/rides/matches/{ride['id']}/no-show", headers=driver_h)
    assert_problem(too_soon, 409, "match-conflict")
    world.clock.advance(timedelta(hours=2, minutes=30))
    gone = await world.client.post(f"/v1/rides/matches/{ride['id']}/no-show", headers=driver_h)
    assert gone.status_code == 200, gone.text
    fee = fee_minor(fare, world.client.app.state.rides.late_cancel_fee_bp)
    assert (gone.json()["cancelled_by"], gone.json()["fee_minor"]) == ("no_show", fee)
    assert await wallet(world.sessionmaker, rider_id) == (200_000 - fee - deposit, 0)
    assert await wallet(world.sessionmaker, driver) == (FUNDS + fee + deposit, 0)
    reputation = await world.client.get(f"/v1/users/{rider_id}/reputation", headers=rider_h)
    assert reputation.status_code == 200
    await ledger_verifies(world.sessionmaker)


async def test_a_cancelled_offer_releases_its_riders_who_go_back_to_matching(
    world: TrustWorld,
) -> None:
    area = new_area()
    _, driver_h = await insured_driver(world)
    _, other_h = await insured_driver(world)
    rider_id, rider_h = await rider(world, FUNDS)
    offer = await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    await accepted(world, request, rider_h, driver_h)
    assert (await wallet(world.sessionmaker, rider_id))[1] > 0
    off = await world.client.post(f"/v1/rides/offers/{offer['id']}/cancel", headers=driver_h)
    assert off.status_code == 200, off.text
    assert off.json()["status"] == "cancelled"
    assert await wallet(world.sessionmaker, rider_id) == (FUNDS, 0)
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    assert (seen.json()["status"], seen.json()["match"]) == ("open", None)
    again = await world.client.post(f"/v1/rides/offers/{offer['id']}/cancel", headers=driver_h)
    assert_problem(again, 409, "match-conflict")
    # Another driver's offer picks the rider up; the worker's job runs every region.
    await post(world, "/v1/rides/offers", offer_body(world, area), other_h)
    assert await match_all(world) >= 1
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    assert seen.json()["status"] == "proposed"
    withdrawn = await world.client.post(
        f"/v1/rides/requests/{request['id']}/cancel", headers=rider_h
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "cancelled"
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    assert (seen.json()["status"], seen.json()["match"]) == ("cancelled", None)
    await ledger_verifies(world.sessionmaker)


async def test_departed_offers_close_and_passed_windows_expire(world: TrustWorld) -> None:
    area = new_area()
    _, driver_h = await insured_driver(world)
    _, rider_h = await rider(world)
    offer = await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    far = new_area()  # a request nobody can serve
    lonely = await post(world, "/v1/rides/requests", request_body(world, far), rider_h)
    world.clock.advance(timedelta(hours=3))
    assert await expire(world) >= 2
    closed = await world.client.get(f"/v1/rides/offers/{offer['id']}", headers=driver_h)
    assert closed.json()["status"] == "closed"
    seen = await world.client.get(f"/v1/rides/requests/{lonely['id']}", headers=rider_h)
    assert seen.json()["status"] == "expired"
    assert await match(world, far) == 0

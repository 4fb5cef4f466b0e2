"""Carpool over HTTP, on SQLite and PostgreSQL, in CNY: offers and requests, batch proposals,
accept (a seat and the fare held at once), decline and re-match, expiry, completion paying the
driver less the fee, cancel fees, access control; the ledger verified throughout."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from matching.fare import settle_match
from payments.money import fee_minor
from rides.models import Match, MatchStatus
from tests.support.ledger import fund
from tests.support.pools import ledger_verifies, wallet
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

FUNDS = 100_000


async def proposal(world: TrustWorld, request_id: str, headers: dict[str, str]) -> dict[str, Any]:
    answer = await world.client.get(f"/v1/rides/requests/{request_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def seats_free(world: TrustWorld, offer_id: str, headers: dict[str, str]) -> int:
    answer = await world.client.get(f"/v1/rides/offers/{offer_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["seats_free"])


async def test_propose_accept_complete_rate(world: TrustWorld) -> None:
    area = new_area()
    driver, driver_h = await insured_driver(world)
    rider_id, rider_h = await rider(world, FUNDS)
    offer = await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    assert (offer["status"], offer["seats_free"]) == ("open", 3)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert (request["status"], request["match"]) == ("open", None)

    assert await match(world, area) == 1
    seen = await proposal(world, request["id"], rider_h)
    proposed = seen["match"]
    assert seen["status"] == "proposed"
    assert proposed["status"] == "proposed"
    assert proposed["driver_id"] == str(driver)
    assert proposed["detour_km"] <= 10
    assert proposed["fare_minor"] > 0
    departure = datetime.fromisoformat(offer["departure_at"])
    assert datetime.fromisoformat(proposed["expires_at"]) <= departure - timedelta(minutes=15)
    fare = proposed["fare_minor"]
    listed = await world.client.get(f"/v1/rides/offers/{offer['id']}/matches", headers=driver_h)
    assert [m["id"] for m in listed.json()["items"]] == [proposed["id"]]

    accepted = await world.client.post(
        f"/v1/rides/matches/{proposed['id']}/accept", headers=driver_h
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"
    assert await wallet(world.sessionmaker, rider_id) == (FUNDS - fare, fare)
    assert await seats_free(world, offer["id"], driver_h) == 2
    assert (await proposal(world, request["id"], rider_h))["status"] == "matched"

    early = await world.client.post(
        f"/v1/rides/matches/{proposed['id']}/complete", headers=driver_h
    )
    assert_problem(early, 409, "match-conflict")
    world.clock.advance(timedelta(hours=3))
    done = await world.client.post(f"/v1/rides/matches/{proposed['id']}/complete", headers=driver_h)
    assert done.status_code == 200, done.text
    # The rider's list shows each request with its current match, as the request itself does.
    single = (await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)).json()
    mine = (await world.client.get("/v1/me/rides?role=rider", headers=rider_h)).json()["items"]
    assert [(r["id"], r["match"]) for r in mine] == [(request["id"], single["match"])]
    assert single["match"]["status"] == "completed"
    split = settle_match(fare, platform_fee_bps=world.client.app.state.rides.fee_bp)
    assert await wallet(world.sessionmaker, rider_id) == (FUNDS - fare, 0)
    assert await wallet(world.sessionmaker, driver) == (split.payout_minor, 0)
    assert split.payout_minor + split.fee_minor == fare
    again = await world.client.post(
        f"/v1/rides/matches/{proposed['id']}/complete", headers=driver_h
    )
    assert_problem(again, 409, "match-conflict")

    rated = await world.client.post(
        "/v1/ratings",
        json={"subject_type": "match", "subject_id": proposed["id"], "ratee_id": str(driver),
              "stars": 5},
        headers=rider_h,
    )  # fmt: skip
    assert rated.status_code == 201, rated.text
    await ledger_verifies(world.sessionmaker)


async def test_a_declined_pair_is_never_proposed_again_and_the_rider_goes_elsewhere(
    world: TrustWorld,
) -> None:
    area = new_area()
    _, first_h = await insured_driver(world)
    second_driver, second_h = await insured_driver(world)
    _, rider_h = await rider(world)
    first = await post(world, "/v1/rides/offers", offer_body(world, area), first_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    proposed = (await proposal(world, request["id"], rider_h))["match"]
    assert proposed["offer_id"] == first["id"]
    declined = await world.client.post(
        f"/v1/rides/matches/{proposed['id']}/decline", headers=first_h
    )
    assert declined.status_code == 200, declined.text
    assert (await proposal(world, request["id"], rider_h))["status"] == "open"
    assert await match(world, area) == 0  # the only offer was declined: never proposed again
    await post(world, "/v1/rides/offers", offer_body(world, area), second_h)
    assert await match(world, area) == 1
    again = (await proposal(world, request["id"], rider_h))["match"]
    assert again["driver_id"] == str(second_driver)
    assert again["id"] != proposed["id"]


async def test_an_unanswered_proposal_expires_and_the_request_returns_to_matching(
    world: TrustWorld,
) -> None:
    area = new_area()
    _, driver_h = await insured_driver(world)
    _, rider_h = await rider(world)
    await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    proposed = (await proposal(world, request["id"], rider_h))["match"]
    world.clock.advance(timedelta(minutes=106))  # past departure - 15 min
    late = await world.client.post(f"/v1/rides/matches/{proposed['id']}/accept", headers=driver_h)
    assert_problem(late, 409, "proposal-expired")
    assert await expire(world) >= 1
    seen = await proposal(world, request["id"], rider_h)
    assert seen["status"] == "open"
    assert seen["match"] is None
    assert await match(world, area) == 0  # the expired pair is not proposed again


async def test_two_accepts_of_the_last_seat_one_wins(world: TrustWorld) -> None:
    area = new_area()
    driver, driver_h = await insured_driver(world)
    offer = await post(world, "/v1/rides/offers", offer_body(world, area, seats=1), driver_h)
    riders = [await rider(world) for _ in range(2)]
    requests = [
        await post(world, "/v1/rides/requests", request_body(world, area), headers)
        for _, headers in riders
    ]
    # Two proposals for one seat (as two matchers could once have made): the seat decides.
    now = world.clock()
    match_ids = []
    async with world.uow as uow:
        for (rider_id, _), request in zip(riders, requests, strict=True):
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
                fare_minor=4_000,
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
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 409], [a.text for a in answers]
    loser = next(a for a in answers if a.status_code == 409)
    assert loser.json()["type"].endswith("no-seats-left")
    assert await seats_free(world, offer["id"], driver_h) == 0
    held = [(await wallet(world.sessionmaker, rider_id))[1] for rider_id, _ in riders]
    assert sorted(held) == [0, 4_000]
    await ledger_verifies(world.sessionmaker)


async def test_a_late_cancel_pays_the_driver_the_fee_and_an_early_one_is_free(
    world: TrustWorld,
) -> None:
    area = new_area()
    driver, driver_h = await insured_driver(world)
    offer = await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    config = world.client.app.state.rides
    (early_id, early_h), (late_id, late_h) = [await rider(world) for _ in range(2)]
    early_req = await post(world, "/v1/rides/requests", request_body(world, area), early_h)
    late_req = await post(world, "/v1/rides/requests", request_body(world, area), late_h)
    assert await match(world, area) == 2
    for request, headers in ((early_req, early_h), (late_req, late_h)):
        proposed = (await proposal(world, request["id"], headers))["match"]
        accepted = await world.client.post(
            f"/v1/rides/matches/{proposed['id']}/accept", headers=driver_h
        )
        assert accepted.status_code == 200, accepted.text
    assert await seats_free(world, offer["id"], driver_h) == 1

    early_match = (await proposal(world, early_req["id"], early_h))["match"]
    cancelled = await world.client.post(
        f"/v1/rides/matches/{early_match['id']}/cancel", headers=early_h
    )
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["fee_minor"]) == ("cancelled", 0)
    assert await wallet(world.sessionmaker, early_id) == (FUNDS, 0)

    world.clock.advance(timedelta(hours=1, minutes=30))  # within the hour before pickup
    late_match = (await proposal(world, late_req["id"], late_h))["match"]
    cancelled = await world.client.post(
        f"/v1/rides/matches/{late_match['id']}/cancel", headers=late_h
    )
    assert cancelled.status_code == 200, cancelled.text
    fee = fee_minor(late_match["fare_minor"], config.late_cancel_fee_bp)
    assert fee > 0
    assert cancelled.json()["fee_minor"] == fee
    assert await wallet(world.sessionmaker, late_id) == (FUNDS - fee, 0)
    assert await wallet(world.sessionmaker, driver) == (fee, 0)
    assert await seats_free(world, offer["id"], driver_h) == 3
    assert (await proposal(world, late_req["id"], late_h))["status"] == "cancelled"
    await ledger_verifies(world.sessionmaker)


async def test_what_another_user_may_not_see_is_404_and_bad_input_is_422(
    world: TrustWorld,
) -> None:
    area = new_area()
    _, driver_h = await insured_driver(world)
    _, other_driver_h = await insured_driver(world)
    _, rider_h = await rider(world)
    _, stranger_h = await rider(world)
    offer = await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    proposed = (await proposal(world, request["id"], rider_h))["match"]

    for path, headers in (
        (f"/v1/rides/requests/{request['id']}", stranger_h),
        (f"/v1/rides/offers/{offer['id']}", other_driver_h),
        (f"/v1/rides/offers/{offer['id']}/matches", rider_h),
    ):
        assert (await world.client.get(path, headers=headers)).status_code == 404, path
    for action in ("accept", "decline", "complete", "cancel"):
        answer = await world.client.post(
            f"/v1/rides/matches/{proposed['id']}/{action}", headers=other_driver_h
        )
        assert answer.status_code == 404, (action, answer.text)
    stolen = await world.client.post(
        f"/v1/rides/requests/{request['id']}/cancel", headers=stranger_h
    )
    assert stolen.status_code == 404

    not_a_driver = await world.client.post(
        "/v1/rides/offers", json=offer_body(world, area), headers=rider_h
    )
    assert_problem(not_a_driver, 403, "trust-denied")
    bad = [
        offer_body(world, area, seats=9),
        offer_body(world, area, departure_at=(world.clock() - timedelta(minutes=1)).isoformat()),
        offer_body(world, area, departure_at=(world.clock() + timedelta(days=15)).isoformat()),
        offer_body(world, area, origin={"lat": 91, "lon": 0}),
        offer_body(world, area, destination=area.city),
        offer_body(world, area, max_detour_km=-1),
        offer_body(world, area, departure_at="9999-12-31T23:59:59-14:00"),
        offer_body(world, area, price_per_km_minor="100"),
        offer_body(world, area, currency="XTS"),
    ]
    for body in bad:
        answer = await world.client.post("/v1/rides/offers", json=body, headers=driver_h)
        assert answer.status_code == 422, (body, answer.text)
    same_place = await world.client.post(
        "/v1/rides/offers", json=offer_body(world, area, destination=area.city), headers=driver_h
    )
    assert same_place.json()["errors"] == [
        {"field": "body", "message": "origin and destination must be at least 100 m apart"}
    ]
    now = world.clock()
    for body in (
        request_body(world, area, latest_departure=now.isoformat()),
        request_body(world, area, earliest_departure=(now + timedelta(hours=3)).isoformat()),
        request_body(world, area, seats=0),
        request_body(world, area, destination={"lat": 0, "lon": 181}),
        request_body(world, area, earliest_departure=(now + timedelta(days=15)).isoformat(),
                     latest_departure=(now + timedelta(days=16)).isoformat()),
        # opens within 14 days but closes after them
        request_body(world, area, earliest_departure=(now + timedelta(days=13)).isoformat(),
                     latest_departure=(now + timedelta(days=14, minutes=1)).isoformat()),
        request_body(world, area, earliest_departure="0001-01-01T00:00:00+14:00"),
        request_body(world, area, latest_departure="9999-12-31T23:59:59-14:00"),
        request_body(world, area, earliest_departure="2026-11-24T10:00:00"),  # no timezone
    ):  # fmt: skip
        answer = await world.client.post("/v1/rides/requests", json=body, headers=rider_h)
        assert answer.status_code == 422, (body, answer.text)
    mine = await world.client.get("/v1/me/rides?role=driver", headers=driver_h)
    assert [o["id"] for o in mine.json()["items"]] == [offer["id"]]
    mine = await world.client.get("/v1/me/rides", headers=rider_h)
    assert [r["id"] for r in mine.json()["items"]] == [request["id"]]
    assert mine.json()["items"][0]["match"]["id"] == proposed["id"]
    last_day = request_body(
        world,
        area,
        earliest_departure=(now + timedelta(days=13)).isoformat(),
        latest_departure=(now + timedelta(days=14)).isoformat(),
    )  # a window closing on the 14th day's last instant is fine
    assert (
        await world.client.post("/v1/rides/requests", json=last_day, headers=rider_h)
    ).status_code == 201


async def test_offers_and_requests_answer_their_times_in_utc(world: TrustWorld) -> None:
    area = new_area()
    _, driver_h = await insured_driver(world)
    _, rider_h = await rider(world)
    beijing = timezone(timedelta(hours=8))
    departure = world.clock() + timedelta(hours=2)
    earliest, latest = departure - timedelta(minutes=10), departure + timedelta(minutes=30)
    offer = await post(
        world,
        "/v1/rides/offers",
        offer_body(world, area, departure_at=departure.astimezone(beijing).isoformat()),
        driver_h,
    )
    request = await post(
        world,
        "/v1/rides/requests",
        request_body(
            world,
            area,
            earliest_departure=earliest.astimezone(beijing).isoformat(),
            latest_departure=latest.astimezone(beijing).isoformat(),
        ),
        rider_h,
    )
    read_offer = await world.client.get(f"/v1/rides/offers/{offer['id']}", headers=driver_h)
    read_request = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    for answer, field, moment in (
        (offer, "departure_at", departure),
        (read_offer.json(), "departure_at", departure),
        (request, "earliest_departure", earliest),
        (request, "latest_departure", latest),
        (read_request.json(), "latest_departure", latest),
    ):
        assert answer[field].endswith("Z"), (field, answer[field])
        assert datetime.fromisoformat(answer[field]) == moment


async def test_a_rider_is_proposed_only_fares_in_a_currency_of_their_wallets(
    world: TrustWorld,
) -> None:
    area = new_area()
    _, yen_h = await insured_driver(world)
    _, yuan_h = await insured_driver(world)
    _, rider_h = await rider(world, FUNDS)  # a CNY wallet only
    _, newcomer_h = await world.user()  # no wallet yet: not held back
    yen = await post(world, "/v1/rides/offers", offer_body(world, area, currency="JPY"), yen_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 0
    seen = (await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)).json()
    assert (seen["status"], seen["match"]) == ("open", None)
    newcomer = await post(world, "/v1/rides/requests", request_body(world, area), newcomer_h)
    assert await match(world, area) == 1
    proposed = await proposal(world, newcomer["id"], newcomer_h)
    assert (proposed["match"]["offer_id"], proposed["match"]["currency"]) == (yen["id"], "JPY")
    yuan = await post(world, "/v1/rides/offers", offer_body(world, area), yuan_h)
    assert await match(world, area) == 1
    proposed = await proposal(world, request["id"], rider_h)
    assert (proposed["match"]["offer_id"], proposed["match"]["currency"]) == (yuan["id"], "CNY")
    # A free ride holds nothing: any rider may take it, whatever its currency.
    _, free_h = await insured_driver(world)
    _, other_h = await rider(world, FUNDS)
    free_body = offer_body(world, area, currency="JPY", price_per_km_minor=0)
    free = await post(world, "/v1/rides/offers", free_body, free_h)
    other = await post(world, "/v1/rides/requests", request_body(world, area), other_h)
    assert await match(world, area) == 1
    proposed = await proposal(world, other["id"], other_h)
    assert (proposed["match"]["offer_id"], proposed["match"]["fare_minor"]) == (free["id"], 0)


async def test_a_driver_is_never_proposed_as_a_rider_of_their_own_offer(world: TrustWorld) -> None:
    area = new_area()
    driver, driver_h = await insured_driver(world)
    other, other_h = await insured_driver(world)
    await fund(world.sessionmaker, driver, FUNDS, "CNY", now=world.clock())
    await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), driver_h)
    assert await match(world, area) == 0
    assert (await proposal(world, request["id"], driver_h))["status"] == "open"
    await post(world, "/v1/rides/offers", offer_body(world, area), other_h)
    assert await match(world, area) == 1
    assert (await proposal(world, request["id"], driver_h))["match"]["driver_id"] == str(other)

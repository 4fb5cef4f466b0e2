"""Rides over HTTP, both backends: an accept retried with its Idempotency-Key moves money once; a
rider who cannot pay is 402 and the seat stays free; lists page with cursors; every bad query is
a 422 problem."""

from __future__ import annotations

from typing import Any

from tests.support.ledger import fund
from tests.support.pools import ledger_verifies, wallet
from tests.support.rides import (
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


async def proposed_match(
    world: TrustWorld, request: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=headers)
    assert seen.status_code == 200, seen.text
    body: dict[str, Any] = seen.json()["match"]
    assert body["status"] == "proposed"
    return body


async def test_an_accept_replayed_with_its_key_holds_the_fare_once(world: TrustWorld) -> None:
    area = new_area()
    _, driver_h = await insured_driver(world)
    rider_id, rider_h = await rider(world, 50_000)
    offer = await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    proposal = await proposed_match(world, request, rider_h)
    keyed = {**driver_h, "Idempotency-Key": "accept-1"}
    path = f"/v1/rides/matches/{proposal['id']}/accept"

    first = await world.client.post(path, headers=keyed)
    assert first.status_code == 200, first.text
    again = await world.client.post(path, headers=keyed)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    fare = first.json()["fare_minor"]
    assert await wallet(world.sessionmaker, rider_id) == (50_000 - fare, fare)
    seen = await world.client.get(f"/v1/rides/offers/{offer['id']}", headers=driver_h)
    assert seen.json()["seats_free"] == 2
    # Without the key the same accept is a state conflict, and still moves nothing.
    assert_problem(await world.client.post(path, headers=driver_h), 409, "match-conflict")
    assert await wallet(world.sessionmaker, rider_id) == (50_000 - fare, fare)
    await ledger_verifies(world.sessionmaker)


async def test_a_rider_who_cannot_pay_is_402_and_the_seat_stays_free(world: TrustWorld) -> None:
    area = new_area()
    _, driver_h = await insured_driver(world)
    rider_id, rider_h = await rider(world, 100)  # ¥1.00: less than any fare here
    offer = await post(world, "/v1/rides/offers", offer_body(world, area, seats=1), driver_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    assert await match(world, area) == 1
    proposal = await proposed_match(world, request, rider_h)
    path = f"/v1/rides/matches/{proposal['id']}/accept"

    poor = await world.client.post(path, headers=driver_h)
    assert_problem(poor, 402, "insufficient-funds")
    seen = await world.client.get(f"/v1/rides/offers/{offer['id']}", headers=driver_h)
    assert seen.json()["seats_free"] == 1  # the seat taken in the same unit of work went back
    assert (await proposed_match(world, request, rider_h))["id"] == proposal["id"]
    assert await wallet(world.sessionmaker, rider_id) == (100, 0)

    await fund(world.sessionmaker, rider_id, 50_000, "CNY", now=world.clock())
    paid = await world.client.post(path, headers=driver_h)
    assert paid.status_code == 200, paid.text
    fare = paid.json()["fare_minor"]
    assert await wallet(world.sessionmaker, rider_id) == (50_100 - fare, fare)
    await ledger_verifies(world.sessionmaker)


async def pages(world: TrustWorld, path: str, headers: dict[str, str]) -> list[list[str]]:
    """Every page of a list, following next_cursor."""
    found: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = f"{path}{'&' if '?' in path else '?'}limit=2" + (
            f"&cursor={cursor}" if cursor else ""
        )
        answer = await world.client.get(query, headers=headers)
        assert answer.status_code == 200, answer.text
        found.append([item["id"] for item in answer.json()["items"]])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return found


async def test_lists_page_newest_first_and_bad_queries_are_422(world: TrustWorld) -> None:
    area = new_area()
    _, driver_h = await insured_driver(world)
    offers = [
        await post(world, "/v1/rides/offers", offer_body(world, area), driver_h) for _ in range(3)
    ]
    requests = []
    for _ in range(5):
        _, rider_h = await rider(world)
        requests.append(await post(world, "/v1/rides/requests", request_body(world, area), rider_h))
    _, own_h = await rider(world)
    mine = [await post(world, "/v1/rides/requests", request_body(world, area), own_h)]
    mine.append(await post(world, "/v1/rides/requests", request_body(world, area), own_h))
    assert await match(world, area) == 7

    newest_first = [o["id"] for o in reversed(offers)]
    driver_pages = await pages(world, "/v1/me/rides?role=driver", driver_h)
    assert driver_pages == [newest_first[:2], newest_first[2:]]
    assert await pages(world, "/v1/me/rides?role=rider", own_h) == [[r["id"] for r in mine[::-1]]]
    listed = await world.client.get("/v1/me/rides", headers=own_h)
    assert {item["kind"] for item in listed.json()["items"]} == {"request"}
    matches = [
        m
        for offer in offers
        for page in await pages(world, f"/v1/rides/offers/{offer['id']}/matches", driver_h)
        for m in page
    ]
    assert len(matches) == len(set(matches)) == 7  # three seats each: 7 riders, 9 seats

    for bad in (
        "/v1/me/rides?role=admin",
        "/v1/me/rides?limit=0",
        "/v1/me/rides?limit=101",
        "/v1/me/rides?cursor=not-a-cursor",
        f"/v1/rides/offers/{offers[0]['id']}/matches?cursor=djI6MQ",
    ):
        assert_problem(await world.client.get(bad, headers=driver_h), 422, "validation-error")
    not_an_id = await world.client.get("/v1/rides/offers/not-a-uuid", headers=driver_h)
    assert not_an_id.status_code == 404  # no such route: a path id is a UUID
    assert (await world.client.get("/v1/me/rides")).status_code == 401

"""The rides jobs chain themselves (both backends, each test on a database of its own, since the
jobs look at every row): a matching run enqueues the expiry run at the moment the first thing
falls due; an expiry run expires the proposal, sends its request back to matching (a matching
run enqueued) and enqueues the next one; departed offers close at their departure."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rides import jobs, service
from rides.config import RideConfig
from tests.support.pools import ledger_verifies, worker_ctx
from tests.support.rides import (
    Enqueued,
    insured_driver,
    new_area,
    offer_body,
    post,
    request_body,
    rider,
)
from tests.support.trust import TrustWorld


def config(world: TrustWorld) -> RideConfig:
    rides: RideConfig = world.client.app.state.rides
    return rides


def expiry_job(at: datetime) -> dict[str, Any]:
    return {"_job_id": f"expire-rides:{int(at.timestamp())}", "_defer_until": at}


async def test_matching_enqueues_the_expiry_which_rematches_and_closes_at_departure(
    own_world: TrustWorld,
) -> None:
    world = own_world
    area = new_area()
    _, driver_h = await insured_driver(world)
    _, rider_h = await rider(world)
    offer = await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    redis = Enqueued()
    ctx = {**worker_ctx(world), "redis": redis}

    # The run hands the region to a job of its own (workers share regions), which proposes.
    assert await jobs.match_rides(ctx) == 0
    (region_job,) = redis.named("match_ride_regions")
    region = service.region_of(request["origin"]["lat"], request["origin"]["lon"], config(world))
    assert region_job["_job_id"].startswith(f"match-regions:{region}:")
    assert redis.arguments[0] == ("match_ride_regions", ([region],))
    redis.jobs.clear()
    assert await jobs.match_ride_regions(ctx, [region]) == 1
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    expires_at = datetime.fromisoformat(seen.json()["match"]["expires_at"])
    departure = datetime.fromisoformat(offer["departure_at"])
    assert expires_at == departure - timedelta(minutes=15)  # before the 3-hour ttl
    # The proposal's expiry comes first (the offer departs later; the request is proposed).
    assert redis.jobs == [("expire_rides", expiry_job(expires_at))]

    redis.jobs.clear()
    world.clock.advance(expires_at - world.clock())
    assert await jobs.expire_rides(ctx) == 1
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    assert (seen.json()["status"], seen.json()["match"]) == ("open", None)
    assert len(redis.named("match_rides")) == 1  # the request went back to matching
    # Next: the offer's departure (the open request's window closes later).
    assert redis.named("expire_rides") == [expiry_job(departure)]

    redis.jobs.clear()
    assert await jobs.match_ride_regions(ctx, [region]) == 0  # the expired pair: never again
    world.clock.advance(departure - world.clock())
    assert await jobs.expire_rides(ctx) == 1
    closed = await world.client.get(f"/v1/rides/offers/{offer['id']}", headers=driver_h)
    assert closed.json()["status"] == "closed"
    latest = datetime.fromisoformat(request["latest_departure"])
    assert redis.named("expire_rides")[-1] == expiry_job(latest)

    redis.jobs.clear()
    world.clock.advance(latest - world.clock())
    assert await jobs.expire_rides(ctx) == 1
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    assert seen.json()["status"] == "expired"
    assert redis.named("expire_rides") == []  # nothing waits any more
    assert await jobs.expire_rides(ctx) == 0  # idempotent
    await ledger_verifies(world.sessionmaker)


async def test_the_sweep_does_what_lost_jobs_left(own_world: TrustWorld) -> None:
    """No job was ever enqueued (Redis lost them): the sweep proposes, then, once due, expires
    the proposal and offers the request again to a newer offer."""
    world = own_world
    area = new_area()
    _, first_h = await insured_driver(world)
    _, second_h = await insured_driver(world)
    _, rider_h = await rider(world)
    first = await post(world, "/v1/rides/offers", offer_body(world, area), first_h)
    request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    ctx = worker_ctx(world)
    assert await jobs.sweep_rides(ctx) == 1
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    assert seen.json()["match"]["offer_id"] == first["id"]
    world.clock.advance(timedelta(minutes=106))
    # A second driver leaving in 14 minutes: within the rider's window (110-150 minutes after
    # the request was made).
    soon = (world.clock() + timedelta(minutes=14)).isoformat()
    second = await post(
        world, "/v1/rides/offers", offer_body(world, area, departure_at=soon), second_h
    )
    assert await jobs.sweep_rides(ctx) == 1
    seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
    assert (seen.json()["status"], seen.json()["match"]["offer_id"]) == ("proposed", second["id"])

"""How the matcher cuts work into batches: neighbouring regions with requests form one batch (one
solver decides between their riders competing for the same offers), regions apart are batches
of their own, a batch covers a bounded number of regions; and the job queues one batch a group."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import h3
import msgspec
import numpy as np
import pytest
from sqlalchemy import select

from matching.assignment import propose_matches
from matching.geometry import Point
from matching.synthetic import city_batch
from rides import jobs, service
from rides.config import RideConfig
from rides.models import LIVE_MATCH, Match, Offer, RideRequest
from tests.support.crowd import funded_members
from tests.support.pools import worker_ctx
from tests.support.rides import (
    NEAR_CITY,
    Enqueued,
    across_a_region_border,
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

SHANGHAI = str(h3.latlng_to_cell(31.2304, 121.4737, 4))


def test_neighbouring_regions_are_one_batch_and_regions_apart_are_not() -> None:
    ring = sorted(str(c) for c in h3.grid_disk(SHANGHAI, 1))
    far = str(h3.latlng_to_cell(39.9042, 116.4074, 4))  # Beijing
    assert sorted(service.region_clusters([far, *ring])) == sorted([ring, [far]])
    # Two cells four apart are two batches, and the centre between them makes a third; the
    # cells of a path from one to the other are one batch.
    apart = sorted(str(c) for c in h3.grid_ring(SHANGHAI, 2))
    first = apart[0]
    opposite = max(apart, key=lambda c: h3.grid_distance(first, c))
    assert h3.grid_distance(first, opposite) == 4
    assert len(service.region_clusters([first, opposite])) == 2
    assert len(service.region_clusters([first, SHANGHAI, opposite])) == 3
    path = [str(c) for c in h3.grid_path_cells(first, opposite)]
    assert service.region_clusters(path) == [sorted(path)]
    assert service.region_clusters([SHANGHAI]) == [[SHANGHAI]]
    assert service.region_clusters([]) == []


def test_a_batch_covers_at_most_the_limit_of_regions_and_every_region_once() -> None:
    disk = [str(c) for c in h3.grid_disk(SHANGHAI, 3)]  # 37 neighbouring cells
    clusters = service.region_clusters(disk)
    assert all(1 <= len(c) <= service.MAX_BATCH_REGIONS for c in clusters)
    assert sorted(r for c in clusters for r in c) == sorted(disk)
    assert len(clusters) == 2


async def test_the_job_queues_riders_of_neighbouring_regions_as_one_batch(
    own_world: TrustWorld,
) -> None:
    world = own_world
    config: RideConfig = world.client.app.state.rides
    west, east = across_a_region_border(new_area(), config)
    _, driver_h = await insured_driver(world)
    await post(world, "/v1/rides/offers", offer_body(world, west), driver_h)
    regions = []
    for side in (west, east):
        _, rider_h = await rider(world)
        await post(world, "/v1/rides/requests", request_body(world, side), rider_h)
        pickup = side.at(NEAR_CITY)
        regions.append(service.region_of(pickup["lat"], pickup["lon"], config))
    redis = Enqueued()
    assert await jobs.match_rides({**worker_ctx(world), "redis": redis}) == 0
    batches = [args for name, args in redis.arguments if name == "match_ride_regions"]
    assert batches == [(sorted(regions),)]
    assert await jobs.match_ride_regions(worker_ctx(world), sorted(regions)) == 2


def _at(base: datetime, seconds: float) -> str:
    return (base + timedelta(seconds=seconds)).isoformat()


async def test_a_seeded_city_through_the_api_breaks_no_limit_and_serves_as_the_solver_does(
    world: TrustWorld,
) -> None:
    """25 drivers (1-3 seats) and 60 riders (1-2 seats) of a seeded commute, posted over HTTP and
    matched by the worker's job: every stop within the seats, every pickup within its window,
    every detour within its limit; as many riders proposed as the pure solver serves alone."""
    area = new_area()
    config: RideConfig = world.client.app.state.rides
    centre = area.city
    batch = city_batch(
        np.random.default_rng(11),
        trips=25,
        riders=60,
        centre=Point(centre["lat"], centre["lon"]),
        radius_km=6.0,
        seats=(1, 3),
        rider_seats=(1, 2),
        max_detour_km=(3.0, 8.0),
    )
    earliest = min(
        min(t.departure_s for t in batch.trips), min(r.earliest_pickup_s for r in batch.riders)
    )
    base = world.clock() + timedelta(minutes=30) - timedelta(seconds=earliest)
    settings = world.client.app.state.settings
    crowd = await funded_members(
        world.sessionmaker, settings, count=len(batch.riders), amount_minor=100_000, now=base
    )
    offers = []
    _, admin_h = await world.admin()
    for trip in batch.trips:
        _, driver_h = await insured_driver(world, admin_h)
        body = {
            "origin": {"lat": trip.origin.lat, "lon": trip.origin.lon},
            "destination": {"lat": trip.destination.lat, "lon": trip.destination.lon},
            "departure_at": _at(base, trip.departure_s),
            "seats": trip.seats,
            "price_per_km_minor": 120,
            "currency": "CNY",
            "max_detour_km": trip.max_detour_km,
        }
        offers.append(await post(world, "/v1/rides/offers", body, driver_h))
    for one, (_, rider_h) in zip(batch.riders, crowd, strict=True):
        body = {
            "origin": {"lat": one.pickup.lat, "lon": one.pickup.lon},
            "destination": {"lat": one.dropoff.lat, "lon": one.dropoff.lon},
            "earliest_departure": _at(base, one.earliest_pickup_s),
            "latest_departure": _at(base, one.latest_pickup_s),
            "seats": one.seats,
        }
        await post(world, "/v1/rides/requests", body, rider_h)

    made = await match_all(world)
    alone = propose_matches(
        [msgspec.structs.replace(t, departure_s=t.departure_s - earliest) for t in batch.trips],
        [
            msgspec.structs.replace(
                r,
                earliest_pickup_s=r.earliest_pickup_s - earliest,
                latest_pickup_s=r.latest_pickup_s - earliest,
            )
            for r in batch.riders
        ],
        router=config.router,
        limits=config.limits,
        resolution=config.h3_resolution,
        max_new_riders_per_trip=service.MAX_NEW_RIDERS,
    )
    assert made >= len(alone.proposals) >= 15, (made, len(alone.proposals))
    await assert_no_limit_broken(world, [o["id"] for o in offers])


async def assert_no_limit_broken(world: TrustWorld, offer_ids: list[str]) -> None:
    matches = Match.__table__  # type: ignore[attr-defined]
    offers = Offer.__table__  # type: ignore[attr-defined]
    requests = RideRequest.__table__  # type: ignore[attr-defined]
    async with world.sessionmaker() as session:
        rows = (
            await session.execute(
                select(
                    matches.c.offer_id,
                    matches.c.seats,
                    matches.c.pickup_eta,
                    matches.c.dropoff_eta,
                    matches.c.detour_km,
                    offers.c.seats.label("offer_seats"),
                    offers.c.max_detour_km,
                    offers.c.departure_at,
                    requests.c.earliest_departure,
                    requests.c.latest_departure,
                )
                .join(offers, offers.c.id == matches.c.offer_id)
                .join(requests, requests.c.id == matches.c.request_id)
                .where(
                    matches.c.offer_id.in_([uuid.UUID(o) for o in offer_ids]),
                    matches.c.status.in_(LIVE_MATCH),
                )
            )
        ).all()
    slack = timedelta(milliseconds=1)
    for row in rows:
        assert row.earliest_departure - slack <= row.pickup_eta <= row.latest_departure + slack
        assert row.departure_at - slack <= row.pickup_eta < row.dropoff_eta
        assert row.detour_km <= row.max_detour_km + 1e-3
    by_offer: dict[uuid.UUID, list[Any]] = {}
    for row in rows:
        by_offer.setdefault(row.offer_id, []).append(row)
    for carried in by_offer.values():
        for row in carried:  # the car at each pickup: everyone picked up and not yet dropped
            aboard = sum(
                other.seats
                for other in carried
                if other.pickup_eta <= row.pickup_eta < other.dropoff_eta
            )
            assert aboard <= row.offer_seats, carried


async def test_the_solver_runs_off_the_event_loop(
    world: TrustWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's solve (seconds for the largest) leaves the loop free: before, it ran on the
    worker's loop and a Redis connect of another job timed out behind it. The solve is slowed
    here; the loop ticks meanwhile."""
    area = new_area()
    _, driver_h = await insured_driver(world)
    await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
    _, rider_h = await rider(world)
    await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
    ticks = 0
    during: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    def slow_solve(*args: Any, **kwargs: Any) -> Any:
        before = ticks
        time.sleep(0.3)
        during.append(ticks - before)
        return propose_matches(*args, **kwargs)

    monkeypatch.setattr(service, "propose_matches", slow_solve)
    ticking = asyncio.create_task(ticker())
    try:
        assert await match(world, area) == 1
    finally:
        ticking.cancel()
    assert len(during) == 1
    assert during[0] >= 5  # (about 30; none when the solve held the loop)

"""Helpers for ride tests: insured drivers, offers and requests around Shanghai, the jobs run as
the worker would."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from rides import jobs, service
from rides.config import RideConfig
from tests.support.ledger import fund
from tests.support.pools import worker_ctx
from tests.support.trust import TrustWorld

#: People's Square to Pudong airport, and a rider going nearly the same way.
CITY = {"lat": 31.2304, "lon": 121.4737}
AIRPORT = {"lat": 31.1443, "lon": 121.8083}
NEAR_CITY = {"lat": 31.2250, "lon": 121.4900}
NEAR_AIRPORT = {"lat": 31.1500, "lon": 121.7900}
_SLOTS = itertools.count()


@dataclass(frozen=True)
class Area:
    """The same trip moved to a place of its own (tests share a database: offers and requests of
    another test are regions away and never meet this test's)."""

    dlat: float
    dlon: float

    def at(self, place: dict[str, float]) -> dict[str, float]:
        return {"lat": place["lat"] + self.dlat, "lon": place["lon"] + self.dlon}

    @property
    def city(self) -> dict[str, float]:
        return self.at(CITY)

    @property
    def airport(self) -> dict[str, float]:
        return self.at(AIRPORT)


def new_area() -> Area:
    """A fresh place: a grid of slots 2 degrees apart between 40 S and 40 N."""
    slot = next(_SLOTS)
    return Area(dlat=-70.0 + 2.0 * (slot % 40), dlon=-100.0 + 2.0 * (slot // 40) % 200)


async def insured_driver(
    world: TrustWorld, admin_h: dict[str, str] | None = None
) -> tuple[uuid.UUID, dict[str, str]]:
    """A user with a verified insurance policy: the driver role, allowed to offer rides (the
    policy verified by `admin_h`, or by a new admin)."""
    user_id, headers = await world.user()
    expires = world.clock() + timedelta(days=365)
    submitted = await world.client.post(
        "/v1/me/insurance",
        json={"provider": "PICC", "policy_number": "PICC-1", "expires_at": expires.isoformat()},
        headers=headers,
    )
    assert submitted.status_code == 201, submitted.text
    if admin_h is None:
        _, admin_h = await world.admin()
    verified = await world.client.post(
        f"/v1/admin/insurance/{submitted.json()['id']}/verify", headers=admin_h
    )
    assert verified.status_code == 200, verified.text
    return user_id, headers


async def rider(world: TrustWorld, funds: int = 100_000) -> tuple[uuid.UUID, dict[str, str]]:
    user_id, headers = await world.user()
    await fund(world.sessionmaker, user_id, funds, "CNY", now=world.clock())
    return user_id, headers


def offer_body(world: TrustWorld, area: Area, **extra: Any) -> dict[str, Any]:
    return {
        "origin": area.at(CITY),
        "destination": area.at(AIRPORT),
        "departure_at": (world.clock() + timedelta(hours=2)).isoformat(),
        "seats": 3,
        "price_per_km_minor": 100,
        "currency": "CNY",
        "max_detour_km": 10,
        **extra,
    }


def request_body(world: TrustWorld, area: Area, **extra: Any) -> dict[str, Any]:
    return {
        "origin": area.at(NEAR_CITY),
        "destination": area.at(NEAR_AIRPORT),
        "earliest_departure": (world.clock() + timedelta(minutes=110)).isoformat(),
        "latest_departure": (world.clock() + timedelta(minutes=150)).isoformat(),
        "seats": 1,
        **extra,
    }


async def post(world: TrustWorld, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    answer = await world.client.post(path, json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def match(world: TrustWorld, area: Area) -> int:
    """One matching batch of the area's region, as the worker's job runs each region."""
    config = world.client.app.state.rides
    near = area.at(NEAR_CITY)
    return await service.match_regions(
        world.uow,
        regions=[service.region_of(near["lat"], near["lon"], config)],
        config=config,
        now=world.clock(),
    )


async def match_all(world: TrustWorld) -> int:
    """The worker's matching job: every region with open requests."""
    return await jobs.match_rides(worker_ctx(world))


async def expire(world: TrustWorld) -> int:
    return await jobs.expire_rides(worker_ctx(world))


def across_a_region_border(area: Area, config: RideConfig) -> tuple[Area, Area]:
    """The same trip moved east in 500 m steps until its pickup's region changes: the last step
    before and the first after (neighbouring regions, a few hundred metres apart)."""
    start = area.at(NEAR_CITY)
    home = service.region_of(start["lat"], start["lon"], config)
    for step in range(1, 200):
        moved = Area(area.dlat, area.dlon + 0.005 * step)
        near = moved.at(NEAR_CITY)
        if service.region_of(near["lat"], near["lon"], config) != home:
            return Area(area.dlat, area.dlon + 0.005 * (step - 1)), moved
    raise AssertionError("no region border within 100 km")


class Enqueued:
    """Stands in for the worker's ArqRedis: records what a job enqueues."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, dict[str, Any]]] = []
        self.arguments: list[tuple[str, tuple[Any, ...]]] = []

    async def enqueue_job(self, name: str, *args: Any, **options: Any) -> None:
        self.jobs.append((name, options))
        self.arguments.append((name, args))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [options for job, options in self.jobs if job == name]

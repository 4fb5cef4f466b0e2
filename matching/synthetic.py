"""Seeded synthetic batches of trips and riders, for tests, gap measurements and benchmarks.

Pure: the caller passes the random generator (`numpy.random.default_rng(seed)`), so one seed is
one batch on any machine. A city batch is a morning commute: most people head to a few hubs
(the centre, a business park, a station) from anywhere in the city, departures around a peak.
An intercity batch runs between a few towns 50-400 km apart.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from matching.feasibility import Rider, Trip
from matching.geometry import Point

KM_PER_DEGREE_LAT = 111.195
#: Shanghai's People's Square: somewhere real, far from the antimeridian and the poles.
SHANGHAI = Point(31.2304, 121.4737)


class Batch(msgspec.Struct, frozen=True):
    """Trips (offers) and riders (requests) to assign together; times are seconds from 0."""

    trips: tuple[Trip, ...]
    riders: tuple[Rider, ...]


def offset(point: Point, east_km: float, north_km: float) -> Point:
    """A point east_km and north_km away (flat-Earth offset: fine within a few hundred km)."""
    lat = max(-89.9, min(89.9, point.lat + north_km / KM_PER_DEGREE_LAT))
    lon = point.lon + east_km / (KM_PER_DEGREE_LAT * math.cos(math.radians(lat)))
    return Point(lat, (lon + 180.0) % 360.0 - 180.0)


def city_batch(
    rng: np.random.Generator,
    *,
    trips: int,
    riders: int,
    centre: Point = SHANGHAI,
    radius_km: float = 20.0,
    hubs: int = 3,
    seats: tuple[int, int] = (1, 4),
    rider_seats: tuple[int, int] = (1, 1),
    max_detour_km: tuple[float, float] = (2.0, 6.0),
    peak_s: float = 3_600.0,
    spread_s: float = 1_800.0,
    window_s: tuple[float, float] = (600.0, 2_400.0),
    to_hub_share: float = 0.8,
) -> Batch:
    """A commute towards a few hubs: to_hub_share of trips and rides end near a hub."""
    hub_points = [_in_disc(rng, centre, radius_km * 0.5) for _ in range(hubs)]

    def destination() -> Point:
        if rng.random() < to_hub_share:
            return _in_disc(rng, hub_points[int(rng.integers(hubs))], 1.5)
        return _in_disc(rng, centre, radius_km)

    made_trips = tuple(
        Trip(
            origin=_in_disc(rng, centre, radius_km),
            destination=destination(),
            departure_s=float(rng.normal(peak_s, spread_s)),
            seats=int(rng.integers(seats[0], seats[1] + 1)),
            max_detour_km=float(rng.uniform(*max_detour_km)),
        )
        for _ in range(trips)
    )
    made_riders = []
    for _ in range(riders):
        earliest = float(rng.normal(peak_s, spread_s))
        made_riders.append(
            Rider(
                pickup=_in_disc(rng, centre, radius_km),
                dropoff=destination(),
                seats=int(rng.integers(rider_seats[0], rider_seats[1] + 1)),
                earliest_pickup_s=earliest,
                latest_pickup_s=earliest + float(rng.uniform(*window_s)),
            )
        )
    return Batch(made_trips, tuple(made_riders))


def intercity_batch(
    rng: np.random.Generator,
    *,
    trips: int,
    riders: int,
    towns: int = 5,
    centre: Point = SHANGHAI,
    spread_km: float = 300.0,
    seats: tuple[int, int] = (1, 4),
    max_detour_km: tuple[float, float] = (5.0, 30.0),
    spread_s: float = 6 * 3_600.0,
    window_s: tuple[float, float] = (1_800.0, 4 * 3_600.0),
) -> Batch:
    """Trips and rides between a few towns; each starts and ends within 5 km of a town."""
    town_points = [_in_disc(rng, centre, spread_km) for _ in range(towns)]

    def leg() -> tuple[Point, Point]:
        a, b = rng.choice(towns, size=2, replace=False)
        return _in_disc(rng, town_points[int(a)], 5.0), _in_disc(rng, town_points[int(b)], 5.0)

    made_trips = []
    for _ in range(trips):
        origin, dest = leg()
        made_trips.append(
            Trip(
                origin=origin,
                destination=dest,
                departure_s=float(rng.uniform(0, spread_s)),
                seats=int(rng.integers(seats[0], seats[1] + 1)),
                max_detour_km=float(rng.uniform(*max_detour_km)),
            )
        )
    made_riders = []
    for _ in range(riders):
        pickup, dropoff = leg()
        earliest = float(rng.uniform(0, spread_s))
        made_riders.append(
            Rider(
                pickup=pickup,
                dropoff=dropoff,
                seats=1,
                earliest_pickup_s=earliest,
                latest_pickup_s=earliest + float(rng.uniform(*window_s)),
            )
        )
    return Batch(tuple(made_trips), tuple(made_riders))


def _in_disc(rng: np.random.Generator, centre: Point, radius_km: float) -> Point:
    distance = radius_km * math.sqrt(float(rng.random()))
    angle = 2 * math.pi * float(rng.random())
    return offset(centre, distance * math.cos(angle), distance * math.sin(angle))

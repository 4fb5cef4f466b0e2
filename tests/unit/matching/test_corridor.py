"""The batch corridor join: every pair that fits is a candidate, whatever the router and plan."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.corridor import RiderArrays, TripArrays, candidate_pairs
from matching.feasibility import InsertionLimits, Rider, Trip, best_insertion, with_rider
from matching.geometry import Point, geodesic_km
from matching.routing import Earth, EstimatingRouter, Router
from matching.synthetic import SHANGHAI, Batch, city_batch, intercity_batch, offset

#: Loose limits: the join must hold whatever the time and heading rules let through.
LIMITS = InsertionLimits(max_added_delay_s=1_800.0, max_heading_diff_deg=180.0)


class WindingRouter:
    """Roads whose circuity varies from place to place (1.0 to 1.8), with no bulk answers and
    nothing said of its circuity or speeds."""

    def distance_km(self, a: Point, b: Point) -> float:
        wiggle = abs(np.sin(np.radians(a.lat * 40 + b.lon * 70)))
        return geodesic_km(a, b) * (1.0 + 0.8 * float(wiggle))

    def duration_s(self, a: Point, b: Point) -> float:
        return self.distance_km(a, b) / 50.0 * 3600.0


def brute_force(
    trips: list[Trip], riders: tuple[Rider, ...], router: Router
) -> set[tuple[int, int]]:
    return {
        (t, r)
        for t, trip in enumerate(trips)
        for r, rider in enumerate(riders)
        if best_insertion(trip, rider, router=router, limits=LIMITS) is not None
    }


def joined(
    trips: list[Trip], riders: tuple[Rider, ...], router: Router, resolution: int
) -> set[tuple[int, int]]:
    t, r = candidate_pairs(
        TripArrays.of(trips, router), RiderArrays.of(riders), router=router, resolution=resolution
    )
    found = set(zip(t.tolist(), r.tolist(), strict=True))
    assert len(found) == len(t)  # no pair twice
    return found


def aboard(batch: Batch, router: Router) -> list[Trip]:
    """Trips with up to two riders of the batch already in their plans."""
    trips = []
    for trip in batch.trips:
        for rider in batch.riders:
            if len(trip.riders) >= 2:
                break
            insertion = best_insertion(trip, rider, router=router, limits=LIMITS)
            if insertion is not None:
                trip = with_rider(trip, rider, insertion)
        trips.append(trip)
    return trips


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    resolution=st.integers(4, 10),
    radius_km=st.sampled_from([3.0, 10.0, 25.0]),
    router_kind=st.sampled_from(["sphere", "ellipsoid", "winding"]),
    with_riders=st.booleans(),
)
def test_the_join_never_loses_a_pair_that_fits_in_a_random_city(
    seed: int, resolution: int, radius_km: float, router_kind: str, with_riders: bool
) -> None:
    router: Router = {
        "sphere": EstimatingRouter(average_speed_kmh=40.0, earth=Earth.SPHERE),
        "ellipsoid": EstimatingRouter(average_speed_kmh=40.0),
        "winding": WindingRouter(),
    }[router_kind]
    batch = city_batch(
        np.random.default_rng(seed),
        trips=8,
        riders=50,
        radius_km=radius_km,
        max_detour_km=(0.5, 8.0),
        spread_s=600.0,
    )
    trips = aboard(batch, router) if with_riders else list(batch.trips)
    feasible = brute_force(trips, batch.riders, router)
    found = joined(trips, batch.riders, router, resolution)
    assert feasible <= found
    assert len(found) < len(trips) * len(batch.riders)  # it prunes


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), resolution=st.integers(3, 7))
def test_the_join_never_loses_a_pair_that_fits_between_towns(seed: int, resolution: int) -> None:
    router = EstimatingRouter(average_speed_kmh=80.0, earth=Earth.SPHERE)
    batch = intercity_batch(np.random.default_rng(seed), trips=10, riders=60)
    trips = list(batch.trips)
    assert brute_force(trips, batch.riders, router) <= joined(
        trips, batch.riders, router, resolution
    )


@pytest.mark.parametrize("shift_km", [0.0, 1e-6])
def test_a_rider_exactly_at_the_edge_of_the_detour_is_a_candidate(shift_km: float) -> None:
    """A rider whose detour is the whole budget (to float precision) is still a candidate."""
    router = EstimatingRouter(average_speed_kmh=40.0, earth=Earth.SPHERE)
    origin, destination = SHANGHAI, offset(SHANGHAI, 10.0, 0.0)
    rider = Rider(
        pickup=offset(SHANGHAI, 3.0, 1.0 + shift_km),
        dropoff=offset(SHANGHAI, 6.0, 1.0),
        seats=1,
        earliest_pickup_s=0.0,
        latest_pickup_s=3_600.0,
    )
    free = Trip(origin=origin, destination=destination, departure_s=0, seats=1, max_detour_km=9)
    insertion = best_insertion(free, rider, router=router, limits=LIMITS)
    assert insertion is not None
    tight = Trip(
        origin=origin,
        destination=destination,
        departure_s=0,
        seats=1,
        max_detour_km=insertion.detour_km,
    )
    assert best_insertion(tight, rider, router=router, limits=LIMITS) is not None
    assert joined([tight], (rider,), router, 7) == {(0, 0)}


def test_riders_across_the_antimeridian_are_found() -> None:
    router = EstimatingRouter(average_speed_kmh=40.0, earth=Earth.SPHERE)
    trip = Trip(
        origin=Point(-17.0, 179.95),
        destination=Point(-17.0, -179.9),
        departure_s=0,
        seats=2,
        max_detour_km=3,
    )
    rider = Rider(
        pickup=Point(-17.0, 179.99),
        dropoff=Point(-17.0, -179.95),
        seats=1,
        earliest_pickup_s=0,
        latest_pickup_s=3_600,
    )
    assert best_insertion(trip, rider, router=router, limits=LIMITS) is not None
    assert joined([trip], (rider,), router, 7) == {(0, 0)}


def test_no_trips_or_no_riders_join_nothing() -> None:
    router = EstimatingRouter(average_speed_kmh=40.0, earth=Earth.SPHERE)
    batch = city_batch(np.random.default_rng(1), trips=3, riders=3)
    assert joined([], batch.riders, router, 7) == set()
    assert joined(list(batch.trips), (), router, 7) == set()

"""The h3 corridor index: candidates come from cells along a trip, and no feasible rider is lost."""

from __future__ import annotations

import h3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.feasibility import InsertionLimits, Rider, Trip, best_insertion
from matching.geometry import Point, geodesic_km, haversine_km, intermediate_point
from matching.index import SpatialIndex, _grid_steps, corridor_reach_km
from matching.routing import EstimatingRouter, Router, min_circuity
from matching.synthetic import SHANGHAI, city_batch, intercity_batch, offset

ROUTER = EstimatingRouter(average_speed_kmh=40.0, circuity_factor=1.3)
#: Loose limits: the index must hold whatever the time and heading rules let through.
LIMITS = InsertionLimits(max_added_delay_s=1_800.0, max_heading_diff_deg=180.0)


class WindingRouter:
    """Roads whose circuity varies from place to place (1.0 to 1.8) and says nothing of it."""

    def distance_km(self, a: Point, b: Point) -> float:
        wiggle = abs(np.sin(np.radians(a.lat * 40 + b.lon * 70)))
        return geodesic_km(a, b) * (1.0 + 0.8 * float(wiggle))

    def duration_s(self, a: Point, b: Point) -> float:
        return self.distance_km(a, b) / 50.0 * 3600.0


def feasible_by_brute_force(
    trips: tuple[Trip, ...], riders: tuple[Rider, ...], router: Router
) -> set[tuple[int, int]]:
    return {
        (t, r)
        for t, trip in enumerate(trips)
        for r, rider in enumerate(riders)
        if best_insertion(trip, rider, router=router, limits=LIMITS) is not None
    }


def found_by_index(
    trips: tuple[Trip, ...], riders: tuple[Rider, ...], router: Router, resolution: int
) -> set[tuple[int, int]]:
    index = SpatialIndex(
        [r.pickup for r in riders], [r.dropoff for r in riders], resolution=resolution
    )
    found = set()
    for t, trip in enumerate(trips):
        reach = corridor_reach_km(
            direct_road_km=router.distance_km(trip.origin, trip.destination),
            max_detour_km=trip.max_detour_km,
            min_circuity=min_circuity(router),
        )
        found.update(
            (t, int(r)) for r in index.candidates(trip.origin, trip.destination, reach_km=reach)
        )
    return found


@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**32 - 1),
    resolution=st.integers(4, 10),
    radius_km=st.sampled_from([3.0, 10.0, 25.0]),
    winding=st.booleans(),
)
def test_the_index_never_loses_a_feasible_pair_in_a_random_city(
    seed: int, resolution: int, radius_km: float, winding: bool
) -> None:
    """Recall 100 %: every (trip, rider) pair brute force finds feasible is a candidate."""
    batch = city_batch(
        np.random.default_rng(seed),
        trips=12,
        riders=40,
        radius_km=radius_km,
        max_detour_km=(0.5, 8.0),
        window_s=(3_600.0, 7_200.0),
    )
    router: Router = WindingRouter() if winding else ROUTER
    feasible = feasible_by_brute_force(batch.trips, batch.riders, router)
    found = found_by_index(batch.trips, batch.riders, router, resolution)
    assert feasible <= found


@settings(max_examples=5)
@given(seed=st.integers(0, 2**32 - 1), resolution=st.integers(3, 8))
def test_the_index_never_loses_a_feasible_pair_between_towns(seed: int, resolution: int) -> None:
    batch = intercity_batch(
        np.random.default_rng(seed), trips=8, riders=30, towns=3, window_s=(8 * 3600.0, 9 * 3600.0)
    )
    feasible = feasible_by_brute_force(batch.trips, batch.riders, ROUTER)
    assert feasible <= found_by_index(batch.trips, batch.riders, ROUTER, resolution)


def test_the_index_prunes_riders_far_from_the_corridor() -> None:
    """Candidates are not all pairs: riders across town are never asked about."""
    batch = city_batch(np.random.default_rng(7), trips=20, riders=400, radius_km=25.0)
    found = found_by_index(batch.trips, batch.riders, ROUTER, 8)
    assert 0 < len(found) < 0.25 * len(batch.trips) * len(batch.riders)


def test_a_rider_exactly_on_the_edge_of_reach_is_a_candidate() -> None:
    origin = SHANGHAI
    destination = offset(SHANGHAI, 10.0, 0.0)
    pickup = offset(SHANGHAI, 5.0, 3.0)
    reach = geodesic_km(origin, pickup) + geodesic_km(pickup, destination)
    index = SpatialIndex([pickup], [destination], resolution=9)
    assert list(index.candidates(origin, destination, reach_km=reach)) == [0]
    assert list(index.candidates(origin, destination, reach_km=reach * 0.98)) == []


def test_riders_on_both_sides_of_the_antimeridian_are_found() -> None:
    origin, destination = Point(-17.8, 179.8), Point(-17.8, -179.8)
    pickup, dropoff = Point(-17.81, 179.95), Point(-17.79, -179.9)
    index = SpatialIndex([pickup], [dropoff], resolution=8)
    reach = geodesic_km(origin, destination) + 2.0
    assert list(index.candidates(origin, destination, reach_km=reach)) == [0]


def test_an_empty_index_answers_no_candidates() -> None:
    index = SpatialIndex([], [], resolution=7)
    assert len(index.candidates(SHANGHAI, offset(SHANGHAI, 5, 5), reach_km=10.0)) == 0


def test_a_reach_past_the_limit_is_refused() -> None:
    index = SpatialIndex([SHANGHAI], [SHANGHAI], resolution=7)
    with pytest.raises(ValueError, match="reach_km"):
        index.candidates(SHANGHAI, SHANGHAI, reach_km=10_000.0)


@given(
    lat=st.floats(-85, 85),
    lon=st.floats(-180, 180),
    bearing=st.floats(0, 360),
    fraction=st.floats(0, 1),
    radius_cells=st.floats(0, 8),
    resolution=st.integers(0, 12),
)
def test_a_grid_disk_of_the_derived_size_covers_every_point_within_the_radius(
    lat: float, lon: float, bearing: float, fraction: float, radius_cells: float, resolution: int
) -> None:
    """The covering step the recall rests on, anywhere on Earth, near pentagons too."""
    edge_km = h3.average_hexagon_edge_length(resolution, unit="km")
    radius_km = radius_cells * edge_km
    centre = Point(lat, lon)
    distance = radius_km * fraction
    east, north = distance * np.sin(np.radians(bearing)), distance * np.cos(np.radians(bearing))
    other = offset(centre, float(east), float(north))
    if float(haversine_km(lat, lon, other.lat, other.lon)) > radius_km:
        return  # the flat offset overshot near a pole: not a point within the radius
    disk = h3.grid_disk(h3.latlng_to_cell(lat, lon, resolution), _grid_steps(radius_km, resolution))
    assert h3.latlng_to_cell(other.lat, other.lon, resolution) in disk


def test_near_every_pentagon_the_derived_grid_disk_still_covers() -> None:
    for resolution in (2, 5, 8):
        edge_km = h3.average_hexagon_edge_length(resolution, unit="km")
        for pentagon in h3.get_pentagons(resolution):
            lat, lon = h3.cell_to_latlng(pentagon)
            steps = _grid_steps(3 * edge_km, resolution)
            disk = set(h3.grid_disk(pentagon, steps))
            for angle in range(0, 360, 30):
                east, north = np.sin(np.radians(angle)), np.cos(np.radians(angle))
                other = offset(Point(lat, lon), 3 * edge_km * east, 3 * edge_km * north)
                if float(haversine_km(lat, lon, other.lat, other.lon)) <= 3 * edge_km:
                    assert h3.latlng_to_cell(other.lat, other.lon, resolution) in disk


def _on_the_edge(origin: Point, destination: Point, sum_km: float, angle_deg: float) -> Point:
    """A point at angle_deg (from the trip's midpoint) where g(o, x) + g(x, d) = sum_km."""
    middle = intermediate_point(origin, destination, 0.5)
    east, north = np.sin(np.radians(angle_deg)), np.cos(np.radians(angle_deg))
    low, high = 0.0, sum_km
    for _ in range(40):
        mid = (low + high) / 2
        x = offset(middle, float(east * mid), float(north * mid))
        if geodesic_km(origin, x) + geodesic_km(x, destination) <= sum_km:
            low = mid
        else:
            high = mid
    return offset(middle, float(east * low), float(north * low))


@settings(max_examples=60)
@given(
    lat=st.floats(-70, 70),
    lon=st.floats(-180, 180),
    length_km=st.floats(0.05, 1_500),
    heading=st.floats(0, 360),
    detour_km=st.floats(0.05, 60),
    angle=st.floats(0, 360),
    along=st.floats(0, 1),
    resolution=st.integers(3, 11),
)
def test_a_rider_at_the_very_edge_of_a_trips_reach_is_never_lost(
    lat: float,
    lon: float,
    length_km: float,
    heading: float,
    detour_km: float,
    angle: float,
    along: float,
    resolution: int,
) -> None:
    """Adversarial riders: the pickup on the boundary of the detour ellipse, the drop-off on the
    way from it to the destination, so the detour is just within the limit."""
    origin = Point(lat, lon)
    destination = offset(
        origin,
        length_km * float(np.sin(np.radians(heading))),
        length_km * float(np.cos(np.radians(heading))),
    )
    trip = Trip(
        origin=origin, destination=destination, departure_s=0.0, seats=4, max_detour_km=detour_km
    )
    reach = corridor_reach_km(
        direct_road_km=ROUTER.distance_km(origin, destination),
        max_detour_km=detour_km,
        min_circuity=ROUTER.circuity_factor,
    )
    pickup = _on_the_edge(origin, destination, reach * 0.9999, angle)
    dropoff = intermediate_point(pickup, destination, along)
    rider = Rider(
        pickup=pickup, dropoff=dropoff, seats=1, earliest_pickup_s=0.0, latest_pickup_s=10**9
    )
    index = SpatialIndex([pickup], [dropoff], resolution=resolution)
    if best_insertion(trip, rider, router=ROUTER, limits=LIMITS) is not None:
        assert list(index.candidates(origin, destination, reach_km=reach)) == [0]

"""Best insertions for many pairs at once (numpy) agree with the scalar best_insertion."""

from __future__ import annotations

import h3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.corridor import RiderArrays, TripArrays, parent_cells
from matching.feasibility import (
    InsertionLimits,
    Rider,
    Trip,
    best_insertion,
    rider_etas_s,
    with_rider,
)
from matching.geometry import Point, bearing_deg
from matching.insertion import Plans, bearings_deg, best_insertions, final_etas_s, heading_fits
from matching.routing import Earth, EstimatingRouter, Router, measure_legs
from matching.synthetic import Batch, city_batch

SPHERE = EstimatingRouter(average_speed_kmh=30.0, earth=Earth.SPHERE)
ELLIPSOID = EstimatingRouter(average_speed_kmh=30.0)


def dense_city(seed: int) -> Batch:
    return city_batch(
        np.random.default_rng(seed),
        trips=8,
        riders=40,
        radius_km=4.0,
        seats=(1, 4),
        rider_seats=(1, 2),
        max_detour_km=(1.0, 8.0),
        spread_s=400.0,
        window_s=(600.0, 3_600.0),
    )


def with_riders_aboard(batch: Batch, router: Router, limits: InsertionLimits) -> list[Trip]:
    """Each trip with up to 2 of the batch's last riders already in its plan (scalar)."""
    trips = []
    for trip in batch.trips:
        for rider in batch.riders[-8:]:
            if len(trip.riders) >= 2:
                break
            insertion = best_insertion(trip, rider, router=router, limits=limits)
            if insertion is not None:
                trip = with_rider(trip, rider, insertion)
        trips.append(trip)
    return trips


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    delay_s=st.sampled_from([0.0, 300.0, 1_800.0]),
    heading_deg=st.sampled_from([45.0, 90.0, 180.0]),
    aboard=st.booleans(),
    sphere=st.booleans(),
)
def test_vectorised_insertions_agree_with_the_scalar_best_insertion(
    seed: int, delay_s: float, heading_deg: float, aboard: bool, sphere: bool
) -> None:
    router = SPHERE if sphere else ELLIPSOID
    limits = InsertionLimits(max_added_delay_s=delay_s, max_heading_diff_deg=heading_deg)
    batch = dense_city(seed)
    trips = with_riders_aboard(batch, router, limits) if aboard else list(batch.trips)
    riders = batch.riders[:-8]
    trip_arrays, rider_arrays = TripArrays.of(trips, router), RiderArrays.of(riders)
    plans = Plans(trips, trip_arrays, router=router, limits=limits, max_new_riders=1)
    t = np.repeat(np.arange(len(trips)), len(riders))
    r = np.tile(np.arange(len(riders)), len(trips))
    heading = heading_fits(trip_arrays, rider_arrays, t, r, limits.max_heading_diff_deg)
    found = best_insertions(plans, rider_arrays, t, r, heading_ok=heading)
    fitting = 0
    for k in range(len(t)):
        expected = best_insertion(trips[t[k]], riders[r[k]], router=router, limits=limits)
        assert bool(found.fits[k]) == (expected is not None)
        if expected is None:
            continue
        fitting += 1
        assert (int(found.i[k]), int(found.j[k]) + 1) == (
            expected.pickup_position,
            expected.dropoff_position,
        )
        assert found.route_km[k] == pytest.approx(expected.route_km, abs=1e-9)
        assert found.added_km[k] == pytest.approx(expected.added_km, abs=1e-9)
        assert found.pickup_eta_s[k] == pytest.approx(expected.pickup_eta_s, abs=1e-6)
        assert found.dropoff_eta_s[k] == pytest.approx(expected.dropoff_eta_s, abs=1e-6)
    assert fitting or delay_s == 0.0 or heading_deg < 90.0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), aboard=st.booleans())
def test_riders_inserted_into_plans_as_arrays_give_the_scalar_plan(seed: int, aboard: bool) -> None:
    """Insert riders one by one both ways: the same stops, promises and ETAs."""
    limits = InsertionLimits(max_added_delay_s=900.0)
    batch = dense_city(seed)
    trips = with_riders_aboard(batch, SPHERE, limits) if aboard else list(batch.trips)
    riders = batch.riders[:-8]
    trip_arrays, rider_arrays = TripArrays.of(trips, SPHERE), RiderArrays.of(riders)
    plans = Plans(trips, trip_arrays, router=SPHERE, limits=limits, max_new_riders=3)
    scalar = list(trips)
    for r in range(len(riders)):
        t = r % len(trips)
        if plans.new_riders[t] >= 3:
            continue
        ts, rs = np.array([t]), np.array([r])
        heading = heading_fits(trip_arrays, rider_arrays, ts, rs, limits.max_heading_diff_deg)
        found = best_insertions(plans, rider_arrays, ts, rs, heading_ok=heading)
        expected = best_insertion(scalar[t], riders[r], router=SPHERE, limits=limits)
        assert bool(found.fits[0]) == (expected is not None)
        if expected is None:
            continue
        plans.insert(
            ts,
            rs,
            rider_arrays,
            found.i,
            found.j,
            found.pickup_eta_s,
            found.dropoff_eta_s,
        )
        scalar[t] = with_rider(scalar[t], riders[r], expected)
    for t, trip in enumerate(scalar):
        built = plans.trip(t, trips[t], riders)
        assert built.stops == trip.stops
        assert built.riders == trip.riders
        assert np.allclose(built.promised_etas_s, trip.promised_etas_s, rtol=0, atol=1e-6)
        assert plans.route_km[t] == pytest.approx(
            sum(
                SPHERE.distance_km(a, b)
                for a, b in zip(
                    [trip.origin, *_stop_points(trip)],
                    [*_stop_points(trip), trip.destination],
                    strict=True,
                )
            )
        )
        etas = rider_etas_s(trip, SPHERE)
        new = final_etas_s(plans, t)
        for offset, rider in enumerate(trip.riders[len(trips[t].riders) :]):
            position = len(trips[t].riders) + offset
            (batch_rider,) = [r for r in new if riders[r] == rider]
            assert np.allclose(new[batch_rider], etas[position], rtol=0, atol=1e-6)


def _stop_points(trip: Trip) -> list[Point]:
    return [
        trip.riders[s.rider].pickup if s.kind == "pickup" else trip.riders[s.rider].dropoff
        for s in trip.stops
    ]


@settings(max_examples=30, deadline=None)
@given(
    lat1=st.floats(-89, 89),
    lon1=st.floats(-180, 180),
    lat2=st.floats(-89, 89),
    lon2=st.floats(-180, 180),
)
def test_vectorised_bearings_are_the_scalar_bearings(
    lat1: float, lon1: float, lat2: float, lon2: float
) -> None:
    vector = bearings_deg(
        np.array([lat1, lat1]),
        np.array([lon1, lon1]),
        np.array([lat2, lat1]),
        np.array([lon2, lon1]),
    )
    assert vector[0] == pytest.approx(bearing_deg(Point(lat1, lon1), Point(lat2, lon2)), abs=1e-9)
    assert vector[1] == 0.0


@settings(max_examples=20, deadline=None)
@given(lat=st.floats(-85, 85), lon=st.floats(-180, 180), resolution=st.integers(0, 12))
def test_parents_from_the_bits_are_h3s_parents(lat: float, lon: float, resolution: int) -> None:
    cell = h3.latlng_to_cell(lat, lon, 13)
    parent = parent_cells(np.array([h3.str_to_int(cell)], dtype=np.uint64), resolution)
    assert h3.int_to_str(int(parent[0])) == h3.cell_to_parent(cell, resolution)


@pytest.mark.parametrize("router", [SPHERE, ELLIPSOID])
def test_legs_measured_in_bulk_are_the_routers_single_answers(router: EstimatingRouter) -> None:
    rng = np.random.default_rng(5)
    a_lats, b_lats = rng.uniform(30, 32, 20), rng.uniform(30, 32, 20)
    a_lons, b_lons = rng.uniform(120, 122, 20), rng.uniform(120, 122, 20)
    km, seconds = measure_legs(router, a_lats, a_lons, b_lats, b_lons)
    for k in range(20):
        a, b = Point(a_lats[k], a_lons[k]), Point(b_lats[k], b_lons[k])
        assert km[k] == pytest.approx(router.distance_km(a, b), rel=1e-12)
        assert seconds[k] == pytest.approx(router.duration_s(a, b), rel=1e-12)


@pytest.mark.parametrize("router", [SPHERE, ELLIPSOID])
def test_plans_on_the_sphere_measure_their_legs_from_unit_vectors(router: EstimatingRouter) -> None:
    batch = dense_city(11)
    trips = list(batch.trips)
    plans = Plans(
        trips,
        TripArrays.of(trips, router),
        router=router,
        limits=InsertionLimits(max_added_delay_s=600.0),
        max_new_riders=1,
    )
    assert (plans.chords is not None) == (router.earth == Earth.SPHERE)
    assert len(plans.columns) == (3 if router.earth == Earth.SPHERE else 2)
    km, _ = measure_legs(
        router, plans.lats[:, 0], plans.lons[:, 0], plans.lats[:, 1], plans.lons[:, 1]
    )
    np.testing.assert_allclose(plans.leg_km[:, 0], km, rtol=1e-12)


def test_a_router_without_bulk_legs_is_asked_leg_by_leg() -> None:
    class Manhattan:
        def distance_km(self, a: Point, b: Point) -> float:
            return abs(a.lat - b.lat) * 111 + abs(a.lon - b.lon) * 95

        def duration_s(self, a: Point, b: Point) -> float:
            return self.distance_km(a, b) * 120

    km, seconds = measure_legs(
        Manhattan(), np.array([31.0]), np.array([121.0]), np.array([31.1]), np.array([121.2])
    )
    assert km.tolist() == pytest.approx([0.1 * 111 + 0.2 * 95])
    assert seconds.tolist() == pytest.approx([(0.1 * 111 + 0.2 * 95) * 120])


def test_a_rider_going_nowhere_heads_every_way() -> None:
    here = Point(31.2, 121.4)
    trip = Trip(
        origin=here, destination=Point(31.3, 121.4), departure_s=0, seats=2, max_detour_km=5
    )
    rider = Rider(pickup=here, dropoff=here, seats=1, earliest_pickup_s=0, latest_pickup_s=60)
    fits = heading_fits(
        TripArrays.of([trip], SPHERE), RiderArrays.of([rider]), np.array([0]), np.array([0]), 0.0
    )
    assert fits.tolist() == [True]


class UphillRouter:
    """Northbound legs are slower and longer than southbound ones: not symmetric, no bulk."""

    def distance_km(self, a: Point, b: Point) -> float:
        return SPHERE.distance_km(a, b) * (1.25 if b.lat > a.lat else 1.0)

    def duration_s(self, a: Point, b: Point) -> float:
        return self.distance_km(a, b) / (25.0 if b.lat > a.lat else 35.0) * 3600.0


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_vectorised_insertions_agree_on_a_router_that_is_not_symmetric(seed: int) -> None:
    router = UphillRouter()
    limits = InsertionLimits(max_added_delay_s=900.0, max_heading_diff_deg=120.0)
    batch = dense_city(seed)
    trips = with_riders_aboard(batch, router, limits)
    riders = batch.riders[:-8]
    trip_arrays, rider_arrays = TripArrays.of(trips, router), RiderArrays.of(riders)
    plans = Plans(trips, trip_arrays, router=router, limits=limits, max_new_riders=1)
    t = np.repeat(np.arange(len(trips)), len(riders))
    r = np.tile(np.arange(len(riders)), len(trips))
    heading = heading_fits(trip_arrays, rider_arrays, t, r, limits.max_heading_diff_deg)
    found = best_insertions(plans, rider_arrays, t, r, heading_ok=heading)
    for k in range(len(t)):
        expected = best_insertion(trips[t[k]], riders[r[k]], router=router, limits=limits)
        assert bool(found.fits[k]) == (expected is not None)
        if expected is not None:
            assert (int(found.i[k]), int(found.j[k]) + 1) == (
                expected.pickup_position,
                expected.dropoff_position,
            )
            assert found.route_km[k] == pytest.approx(expected.route_km, abs=1e-9)
            assert found.dropoff_eta_s[k] == pytest.approx(expected.dropoff_eta_s, abs=1e-6)

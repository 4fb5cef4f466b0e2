"""Feasibility of inserting a rider into a driver's trip: seats, window, detour, delay, heading."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.feasibility import (
    InsertionLimits,
    Rider,
    Stop,
    StopKind,
    Trip,
    best_insertion,
    detour_km,
    rider_etas_s,
    route_km,
    stop_etas_s,
    with_rider,
)
from matching.geometry import Point
from matching.routing import EstimatingRouter
from matching.synthetic import SHANGHAI, city_batch, offset

ROUTER = EstimatingRouter(average_speed_kmh=36.0, circuity_factor=1.3)  # 100 s per road km
LIMITS = InsertionLimits(max_added_delay_s=600.0, max_heading_diff_deg=90.0)

ORIGIN = SHANGHAI
DESTINATION = offset(SHANGHAI, 10.0, 0.0)  # 10 km east: 13 road km, 1,300 s


def east(km: float, north_km: float = 0.0) -> Point:
    return offset(SHANGHAI, km, north_km)


def trip(**changes: object) -> Trip:
    values: dict[str, object] = {
        "origin": ORIGIN,
        "destination": DESTINATION,
        "departure_s": 0.0,
        "seats": 3,
        "max_detour_km": 3.0,
    }
    values.update(changes)
    return Trip(**values)  # type: ignore[arg-type]


def rider(pickup: Point, dropoff: Point, **changes: object) -> Rider:
    values: dict[str, object] = {
        "pickup": pickup,
        "dropoff": dropoff,
        "seats": 1,
        "earliest_pickup_s": 0.0,
        "latest_pickup_s": 3_600.0,
    }
    values.update(changes)
    return Rider(**values)  # type: ignore[arg-type]


def test_a_rider_on_the_way_fits_with_almost_no_detour_and_etas_along_the_road() -> None:
    insertion = best_insertion(
        trip(), rider(east(2, 0.1), east(8, -0.1)), router=ROUTER, limits=LIMITS
    )
    assert insertion is not None
    assert insertion.stops == (Stop(0, StopKind.PICKUP), Stop(0, StopKind.DROPOFF))
    assert (insertion.pickup_position, insertion.dropoff_position) == (0, 1)
    assert 0 < insertion.detour_km < 0.1
    assert insertion.pickup_eta_s == pytest.approx(ROUTER.duration_s(ORIGIN, east(2, 0.1)))
    assert insertion.dropoff_eta_s == pytest.approx(
        insertion.pickup_eta_s + ROUTER.duration_s(east(2, 0.1), east(8, -0.1))
    )


def test_a_rider_whose_detour_exceeds_the_drivers_limit_does_not_fit() -> None:
    far_off = rider(east(5, 4), east(9, 0))  # ~4 km off the road: ~5 road km of detour
    assert best_insertion(trip(), far_off, router=ROUTER, limits=LIMITS) is None
    assert best_insertion(trip(max_detour_km=8.0), far_off, router=ROUTER, limits=LIMITS)


def test_a_rider_asking_for_more_seats_than_free_does_not_fit() -> None:
    assert (
        best_insertion(
            trip(seats=2), rider(east(2), east(8), seats=3), router=ROUTER, limits=LIMITS
        )
        is None
    )


def test_a_rider_whose_window_the_driver_passes_outside_does_not_fit() -> None:
    # The driver reaches 2 km east at 260 s: too late for a window ending at 200 s, too early
    # for one starting at 400 s (the driver does not wait).
    late = rider(east(2), east(8), earliest_pickup_s=0.0, latest_pickup_s=200.0)
    early = rider(east(2), east(8), earliest_pickup_s=400.0, latest_pickup_s=900.0)
    assert best_insertion(trip(), late, router=ROUTER, limits=LIMITS) is None
    assert best_insertion(trip(), early, router=ROUTER, limits=LIMITS) is None
    assert best_insertion(trip(departure_s=200.0), early, router=ROUTER, limits=LIMITS)


def test_a_rider_heading_against_the_driver_does_not_fit() -> None:
    backwards = rider(east(8), east(2))
    assert best_insertion(trip(max_detour_km=50.0), backwards, router=ROUTER, limits=LIMITS) is None
    anything_goes = InsertionLimits(max_added_delay_s=600.0, max_heading_diff_deg=180.0)
    assert best_insertion(trip(max_detour_km=50.0), backwards, router=ROUTER, limits=anything_goes)


def test_a_rider_who_delays_one_on_board_beyond_the_limit_does_not_fit() -> None:
    on_board = rider(east(1), east(9))
    first = best_insertion(trip(max_detour_km=10.0), on_board, router=ROUTER, limits=LIMITS)
    assert first is not None
    with_one = with_rider(trip(max_detour_km=10.0), on_board, first)
    detour = rider(east(4, 5), east(6, 5))  # 7.4 road km more: 740 s later for on_board
    assert best_insertion(with_one, detour, router=ROUTER, limits=LIMITS) is None
    patient = InsertionLimits(max_added_delay_s=900.0)
    assert best_insertion(with_one, detour, router=ROUTER, limits=patient) is not None


def test_delays_from_several_new_riders_add_up_against_the_limit() -> None:
    """North, then south of the road: each alone delays the first rider by ~320 s, the second
    adds ~660 s after the first (within 700 s), but ~980 s in all is past the 700 s limit."""
    limits = InsertionLimits(max_added_delay_s=700.0)
    on_board = rider(east(1), east(9))
    plan = trip(max_detour_km=12.0)
    plan = with_rider(plan, on_board, best_insertion(plan, on_board, router=ROUTER, limits=limits))  # type: ignore[arg-type]
    north = rider(east(3, 3), east(4, 3))
    south = rider(east(6, -3), east(7, -3))
    assert best_insertion(plan, south, router=ROUTER, limits=limits) is not None
    inserted = best_insertion(plan, north, router=ROUTER, limits=limits)
    assert inserted is not None
    plan = with_rider(plan, north, inserted)
    assert plan.promised_etas_s[1] == (inserted.pickup_eta_s, inserted.dropoff_eta_s)
    assert best_insertion(plan, south, router=ROUTER, limits=limits) is None
    forgetful = msgspec.structs.replace(plan, promised_etas_s=tuple(rider_etas_s(plan, ROUTER)))
    assert best_insertion(forgetful, south, router=ROUTER, limits=limits) is not None


def test_a_rider_who_pushes_an_on_board_pickup_past_its_window_does_not_fit() -> None:
    on_board = rider(east(8), east(9.5), latest_pickup_s=1_050.0)  # reached at ~1,040 s
    first = best_insertion(trip(max_detour_km=10.0), on_board, router=ROUTER, limits=LIMITS)
    assert first is not None
    with_one = with_rider(trip(max_detour_km=10.0), on_board, first)
    assert (
        best_insertion(with_one, rider(east(3, 0.5), east(7, 0.5)), router=ROUTER, limits=LIMITS)
        is None
    )


def test_the_best_insertion_shares_the_car_when_seats_allow_and_not_when_full() -> None:
    a = rider(east(1), east(6))
    b = rider(east(3), east(9))
    single = trip(seats=1, max_detour_km=5.0)
    plan = with_rider(single, a, best_insertion(single, a, router=ROUTER, limits=LIMITS))  # type: ignore[arg-type]
    # b rides after a is dropped off? a leaves at 6 km, b boards at 3 km: they would overlap.
    assert best_insertion(plan, b, router=ROUTER, limits=LIMITS) is None
    double = trip(seats=2, max_detour_km=5.0)
    plan = with_rider(double, a, best_insertion(double, a, router=ROUTER, limits=LIMITS))  # type: ignore[arg-type]
    both = best_insertion(plan, b, router=ROUTER, limits=LIMITS)
    assert both is not None
    assert both.stops == (
        Stop(0, StopKind.PICKUP),
        Stop(1, StopKind.PICKUP),
        Stop(0, StopKind.DROPOFF),
        Stop(1, StopKind.DROPOFF),
    )


def test_a_plan_that_overbooks_or_drops_before_picking_up_is_refused() -> None:
    a = rider(east(1), east(6), seats=2)
    with pytest.raises(ValueError, match="more riders than"):
        trip(seats=1, riders=(a,), stops=(Stop(0, StopKind.PICKUP), Stop(0, StopKind.DROPOFF)))
    with pytest.raises(ValueError, match="picked up once"):
        trip(riders=(a,), stops=(Stop(0, StopKind.DROPOFF), Stop(0, StopKind.PICKUP)))
    with pytest.raises(ValueError, match="every rider"):
        trip(riders=(a,), stops=(Stop(0, StopKind.PICKUP),))
    with pytest.raises(ValueError, match="promised"):
        trip(riders=(a,), stops=(Stop(0, StopKind.PICKUP), Stop(0, StopKind.DROPOFF)))


def test_a_rider_with_a_window_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        rider(east(1), east(2), earliest_pickup_s=10.0, latest_pickup_s=5.0)


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), delay_s=st.sampled_from([0.0, 120.0, 600.0]))
def test_no_plan_built_by_insertions_ever_exceeds_seats_windows_detour_or_delay(
    seed: int, delay_s: float
) -> None:
    """Insert riders one by one into random trips; recompute every rule from the final plan."""
    batch = city_batch(
        np.random.default_rng(seed),
        trips=4,
        riders=30,
        radius_km=4.0,
        seats=(1, 4),
        rider_seats=(1, 3),
        max_detour_km=(2.0, 10.0),
        spread_s=400.0,
        window_s=(1_800.0, 5_400.0),
    )
    limits = InsertionLimits(max_added_delay_s=delay_s, max_heading_diff_deg=120.0)
    for current in batch.trips:
        for new in batch.riders:
            before = stop_etas_s(current, ROUTER)
            insertion = best_insertion(current, new, router=ROUTER, limits=limits)
            if insertion is None:
                continue
            after = with_rider(current, new, insertion)
            assert detour_km(after, ROUTER) <= after.max_detour_km + 1e-6
            assert insertion.detour_km == pytest.approx(detour_km(after, ROUTER))
            assert insertion.added_km == pytest.approx(
                route_km(after, ROUTER) - route_km(current, ROUTER)
            )
            load = 0
            for stop in after.stops:
                seats = after.riders[stop.rider].seats
                load += seats if stop.kind == StopKind.PICKUP else -seats
                assert 0 <= load <= after.seats
            for position, (pickup_s, dropoff_s) in enumerate(rider_etas_s(after, ROUTER)):
                own = after.riders[position]
                assert own.earliest_pickup_s - 1e-6 <= pickup_s <= own.latest_pickup_s + 1e-6
                assert pickup_s <= dropoff_s
            assert rider_etas_s(after, ROUTER)[-1] == pytest.approx(
                (insertion.pickup_eta_s, insertion.dropoff_eta_s)
            )
            new_stops = [s for s in after.stops if s.rider != len(current.riders)]
            etas = [
                eta
                for s, eta in zip(after.stops, stop_etas_s(after, ROUTER), strict=True)
                if s.rider != len(current.riders)
            ]
            assert new_stops == list(current.stops)
            assert all(early <= late + 1e-6 for early, late in zip(before, etas, strict=True))
            for (pickup_s, dropoff_s), (promised_pickup_s, promised_dropoff_s) in zip(
                rider_etas_s(after, ROUTER), after.promised_etas_s, strict=True
            ):
                assert pickup_s - promised_pickup_s <= delay_s + 1e-6
                assert dropoff_s - promised_dropoff_s <= delay_s + 1e-6
            current = after

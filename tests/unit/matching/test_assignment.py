"""Assignment of a batch: the most riders, then the most distance saved; never past a limit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

import matching.assignment as assignment
from matching.assignment import (
    Assignment,
    Pair,
    assign_exact,
    assign_greedy,
    feasible_pairs,
    matching_bound,
    measure_gap,
    propose_matches,
    solve_pairwise,
)
from matching.feasibility import (
    InsertionLimits,
    Rider,
    StopKind,
    Trip,
    best_insertion,
    detour_km,
    rider_etas_s,
    with_rider,
)
from matching.routing import Earth, EstimatingRouter, Router
from matching.synthetic import SHANGHAI, Batch, city_batch, offset

ROUTER = EstimatingRouter(average_speed_kmh=30.0, earth=Earth.SPHERE)
ELLIPSOID = EstimatingRouter(average_speed_kmh=30.0)
LIMITS = InsertionLimits(max_added_delay_s=600.0)
RESOLUTION = 7


def small_city(seed: int, *, trips: int = 12, riders: int = 36, seats: int = 4) -> Batch:
    """Dense enough that cars fill and riders compete."""
    return city_batch(
        np.random.default_rng(seed),
        trips=trips,
        riders=riders,
        radius_km=5.0,
        seats=(1, seats),
        rider_seats=(1, 2),
        spread_s=900.0,
    )


def assert_within_every_limit(batch: Batch, result: Assignment, router: Router) -> None:
    """Recompute the rules from each final plan: seats, windows, detour, promised delays."""
    served = [p.rider for p in result.proposals]
    assert len(served) == len(set(served))
    for t, plan in enumerate(result.plans):
        original = batch.trips[t]
        assert plan.riders[: len(original.riders)] == original.riders
        assert detour_km(plan, router) <= plan.max_detour_km + 1e-6
        load = 0
        for stop in plan.stops:
            seats = plan.riders[stop.rider].seats
            load += seats if stop.kind == StopKind.PICKUP else -seats
            assert load <= plan.seats
        etas = rider_etas_s(plan, router)
        for own, (pickup_s, dropoff_s), (promised_pickup_s, promised_dropoff_s) in zip(
            plan.riders, etas, plan.promised_etas_s, strict=True
        ):
            assert own.earliest_pickup_s - 1e-6 <= pickup_s <= own.latest_pickup_s + 1e-6
            assert pickup_s <= dropoff_s
            assert pickup_s - promised_pickup_s <= LIMITS.max_added_delay_s + 1e-6
            assert dropoff_s - promised_dropoff_s <= LIMITS.max_added_delay_s + 1e-6
    for proposal in result.proposals:
        plan = result.plans[proposal.trip]
        position = plan.riders.index(batch.riders[proposal.rider])
        expected = rider_etas_s(plan, router)[position]
        assert proposal.pickup_eta_s == pytest.approx(expected[0], abs=1e-6)
        assert proposal.dropoff_eta_s == pytest.approx(expected[1], abs=1e-6)
        assert proposal.detour_km <= plan.max_detour_km + 1e-6


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_new=st.integers(1, 4))
def test_greedy_plans_never_exceed_seats_windows_detour_or_delay(seed: int, max_new: int) -> None:
    batch = small_city(seed)
    pairs = feasible_pairs(
        batch.trips, batch.riders, router=ROUTER, limits=LIMITS, resolution=RESOLUTION
    )
    result = assign_greedy(
        batch.trips,
        batch.riders,
        pairs,
        router=ROUTER,
        limits=LIMITS,
        max_new_riders_per_trip=max_new,
    )
    assert_within_every_limit(batch, result, ROUTER)
    assert all(len(p.riders) <= max_new for p in result.plans)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_new=st.integers(1, 4))
def test_the_exact_solver_serves_at_least_as_many_riders_as_the_heuristic(
    seed: int, max_new: int
) -> None:
    batch = small_city(seed)
    pairs = feasible_pairs(
        batch.trips, batch.riders, router=ROUTER, limits=LIMITS, resolution=RESOLUTION
    )
    greedy = assign_greedy(
        batch.trips,
        batch.riders,
        pairs,
        router=ROUTER,
        limits=LIMITS,
        max_new_riders_per_trip=max_new,
    )
    bound = solve_pairwise(batch.trips, batch.riders, pairs, max_new_riders_per_trip=max_new)
    exact = assign_exact(
        batch.trips,
        batch.riders,
        pairs,
        router=ROUTER,
        limits=LIMITS,
        max_new_riders_per_trip=max_new,
    )
    assert_within_every_limit(batch, exact, ROUTER)
    assert len(bound) >= exact.riders_served >= greedy.riders_served
    if exact.riders_served == greedy.riders_served:
        assert exact.saved_km >= greedy.saved_km - 1e-6
    if max_new == 1:
        assert exact.riders_served == len(bound)
        assert exact.saved_km == pytest.approx(sum(p.saved_km for p in bound))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_pairwise_optimum_gives_each_rider_one_trip_and_each_trip_its_rider_slots(
    seed: int,
) -> None:
    batch = small_city(seed, trips=10, riders=50)
    pairs = feasible_pairs(
        batch.trips, batch.riders, router=ROUTER, limits=LIMITS, resolution=RESOLUTION
    )
    feasible = {(p.trip, p.rider) for p in pairs}
    for max_new in (1, 2, 8):
        chosen = solve_pairwise(batch.trips, batch.riders, pairs, max_new_riders_per_trip=max_new)
        assert len({p.rider for p in chosen}) == len(chosen)
        assert {(p.trip, p.rider) for p in chosen} <= feasible
        for t in range(len(batch.trips)):
            assert sum(p.trip == t for p in chosen) <= max_new


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_new=st.integers(1, 3))
def test_the_dense_and_the_sparse_assignment_find_the_same_optimum(seed: int, max_new: int) -> None:
    batch = city_batch(np.random.default_rng(seed), trips=15, riders=60, radius_km=5.0)
    pairs = feasible_pairs(
        batch.trips, batch.riders, router=ROUTER, limits=LIMITS, resolution=RESOLUTION
    )

    def objective(chosen: list[Pair]) -> tuple[int, float]:
        return len(chosen), round(sum(p.saved_km for p in chosen), 6)

    dense = objective(
        solve_pairwise(batch.trips, batch.riders, pairs, max_new_riders_per_trip=max_new)
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assignment, "_DENSE_MAX_CELLS", 0)
        sparse = objective(
            solve_pairwise(batch.trips, batch.riders, pairs, max_new_riders_per_trip=max_new)
        )
    assert dense == sparse


def test_serving_one_more_rider_beats_any_distance_saved() -> None:
    """Trip 0 suits both riders, trip 1 only rider B: the best saving (B in trip 0) would leave
    A out; the optimum gives B the worse trip and serves both."""

    def trip(north_km: float, max_detour_km: float) -> Trip:
        return Trip(
            origin=offset(SHANGHAI, 0, north_km),
            destination=offset(SHANGHAI, 10, north_km),
            departure_s=0.0,
            seats=1,
            max_detour_km=max_detour_km,
        )

    def rider(start_km: float, end_km: float, north_km: float) -> Rider:
        return Rider(
            pickup=offset(SHANGHAI, start_km, north_km),
            dropoff=offset(SHANGHAI, end_km, north_km),
            seats=1,
            earliest_pickup_s=0.0,
            latest_pickup_s=3_600.0,
        )

    trips = (trip(0.0, 2.0), trip(0.8, 1.0))
    a, b = rider(1, 3, -0.9), rider(0.5, 9.5, 0.2)
    pairs = feasible_pairs(trips, (a, b), router=ROUTER, limits=LIMITS, resolution=RESOLUTION)
    assert {(p.trip, p.rider) for p in pairs} == {(0, 0), (0, 1), (1, 1)}
    saved = {(p.trip, p.rider): p.saved_km for p in pairs}
    assert saved[(0, 1)] > saved[(1, 1)] + saved[(0, 0)] / 4
    chosen = solve_pairwise(trips, (a, b), pairs, max_new_riders_per_trip=1)
    assert {(p.trip, p.rider) for p in chosen} == {(0, 0), (1, 1)}
    result = propose_matches(
        trips,
        (a, b),
        router=ROUTER,
        limits=LIMITS,
        resolution=RESOLUTION,
        max_new_riders_per_trip=1,
    )
    assert {(p.trip, p.rider) for p in result.proposals} == {(0, 0), (1, 1)}


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sphere=st.booleans())
def test_feasible_pairs_through_the_index_are_exactly_the_brute_force_pairs(
    seed: int, sphere: bool
) -> None:
    """The corridor index and the numpy pruning in front of best_insertion drop nothing."""
    router = ROUTER if sphere else ELLIPSOID
    batch = city_batch(
        np.random.default_rng(seed), trips=10, riders=40, radius_km=6.0, max_detour_km=(1.0, 8.0)
    )
    found = {
        (p.trip, p.rider)
        for p in feasible_pairs(
            batch.trips, batch.riders, router=router, limits=LIMITS, resolution=RESOLUTION
        )
    }
    brute = {
        (t, r)
        for t, trip in enumerate(batch.trips)
        for r, rider in enumerate(batch.riders)
        if best_insertion(trip, rider, router=router, limits=LIMITS) is not None
    }
    assert found == brute


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_new=st.integers(1, 4))
def test_proposed_matches_are_feasible_and_exact_with_one_rider_per_trip(
    seed: int, max_new: int
) -> None:
    batch = small_city(seed, riders=48)
    result = propose_matches(
        batch.trips,
        batch.riders,
        router=ROUTER,
        limits=LIMITS,
        resolution=RESOLUTION,
        max_new_riders_per_trip=max_new,
    )
    assert_within_every_limit(batch, result, ROUTER)
    if max_new == 1:
        pairs = feasible_pairs(
            batch.trips, batch.riders, router=ROUTER, limits=LIMITS, resolution=RESOLUTION
        )
        bound = solve_pairwise(batch.trips, batch.riders, pairs, max_new_riders_per_trip=1)
        assert result.riders_served == len(bound)


def test_the_gap_is_measured_against_the_exact_answer_and_stays_small() -> None:
    batches = [small_city(seed, trips=20, riders=60) for seed in range(4)]
    gap = measure_gap(
        batches, router=ROUTER, limits=LIMITS, resolution=RESOLUTION, max_new_riders_per_trip=3
    )
    assert gap.batches == 4
    assert gap.riders == 240
    assert gap.bound_served >= gap.exact_served >= gap.heuristic_served > 0
    assert 0.9 <= gap.served_share <= 1.0
    assert gap.worst_served_share <= gap.served_share
    assert gap.bound_share <= gap.served_share


def test_a_declined_pair_is_never_proposed_again() -> None:
    batch = small_city(3, riders=48)
    first = propose_matches(
        batch.trips,
        batch.riders,
        router=ROUTER,
        limits=LIMITS,
        resolution=RESOLUTION,
        max_new_riders_per_trip=1,
    )
    declined = {(p.trip, p.rider) for p in first.proposals}
    assert declined
    again = propose_matches(
        batch.trips,
        batch.riders,
        router=ROUTER,
        limits=LIMITS,
        resolution=RESOLUTION,
        max_new_riders_per_trip=1,
        excluded=frozenset(declined),
    )
    assert again.proposals
    assert not declined & {(p.trip, p.rider) for p in again.proposals}


def test_an_empty_batch_proposes_nothing() -> None:
    result = propose_matches(
        (), (), router=ROUTER, limits=LIMITS, resolution=RESOLUTION, max_new_riders_per_trip=2
    )
    assert result.proposals == ()
    assert result.riders_served == 0


def with_riders_aboard(batch: Batch) -> Batch:
    """The batch with its first trips carrying one of its last riders already."""
    trips = list(batch.trips)
    for t in range(0, len(trips), 3):
        for rider in batch.riders[-6:]:
            insertion = best_insertion(trips[t], rider, router=ROUTER, limits=LIMITS)
            if insertion is not None:
                trips[t] = with_rider(trips[t], rider, insertion)
                break
    return Batch(tuple(trips), batch.riders[:-6])


def optimum_one_rider_a_trip(batch: Batch) -> tuple[int, float]:
    """Brute force: best_insertion on every pair, a dense assignment over all of them."""
    saved = np.zeros((len(batch.riders), len(batch.trips)))
    fits = np.zeros_like(saved, dtype=bool)
    for t, trip in enumerate(batch.trips):
        for r, rider in enumerate(batch.riders):
            insertion = best_insertion(trip, rider, router=ROUTER, limits=LIMITS)
            if insertion is not None:
                fits[r, t] = True
                own = ROUTER.distance_km(rider.pickup, rider.dropoff)
                saved[r, t] = own - insertion.added_km
    big = 1.0 + 2.0 * float(np.abs(saved).sum())
    rows, columns = linear_sum_assignment(np.where(fits, -(big + saved), 0.0))
    chosen = fits[rows, columns]
    return int(chosen.sum()), float(saved[rows, columns][chosen].sum())


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sparse=st.booleans(), aboard=st.booleans())
def test_one_rider_a_trip_is_the_brute_force_optimum_dense_or_sparse(
    seed: int, sparse: bool, aboard: bool
) -> None:
    batch = small_city(seed, trips=15, riders=50)
    if aboard:
        batch = with_riders_aboard(batch)
    with pytest.MonkeyPatch.context() as patch:
        if sparse:
            patch.setattr(assignment, "_DENSE_MAX_CELLS", 0)
        result = propose_matches(
            batch.trips,
            batch.riders,
            router=ROUTER,
            limits=LIMITS,
            resolution=RESOLUTION,
            max_new_riders_per_trip=1,
        )
    assert_within_every_limit(batch, result, ROUTER)
    count, saved = optimum_one_rider_a_trip(batch)
    assert result.riders_served == count
    assert result.saved_km == pytest.approx(saved, abs=1e-6)
    assert count == matching_bound(
        batch.trips,
        batch.riders,
        router=ROUTER,
        limits=LIMITS,
        resolution=RESOLUTION,
        max_new_riders_per_trip=1,
    )


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    max_new=st.integers(2, 4),
    sparse=st.booleans(),
    aboard=st.booleans(),
    repaired=st.booleans(),
)
def test_rounds_of_assignments_never_exceed_seats_windows_detour_or_delay(
    seed: int, max_new: int, sparse: bool, aboard: bool, repaired: bool
) -> None:
    """The array path (neither the exact solver nor the greedy heuristic; with the repairs or
    without): every rule holds in every plan, no trip takes more than max_new new riders, and
    the proposals are the plans' new riders."""
    batch = small_city(seed, trips=12, riders=60)
    if aboard:
        batch = with_riders_aboard(batch)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assignment, "GREEDY_MAX_PAIRS", 0)
        if not repaired:
            patch.setattr(assignment, "REPAIR_MAX_PAIRS", 0)
        if sparse:
            patch.setattr(assignment, "_DENSE_MAX_CELLS", 0)
        result = propose_matches(
            batch.trips,
            batch.riders,
            router=ROUTER,
            limits=LIMITS,
            resolution=RESOLUTION,
            max_new_riders_per_trip=max_new,
            exact_max_pairs=0,
        )
    assert_within_every_limit(batch, result, ROUTER)
    for original, plan in zip(batch.trips, result.plans, strict=True):
        assert len(plan.riders) - len(original.riders) <= max_new
    assert {p.rider for p in result.proposals} == {
        batch.riders.index(rider)
        for original, plan in zip(batch.trips, result.plans, strict=True)
        for rider in plan.riders[len(original.riders) :]
    }


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_new=st.integers(2, 3))
def test_proposals_serve_at_least_what_the_greedy_heuristic_serves_and_at_most_the_exact(
    seed: int, max_new: int
) -> None:
    batch = small_city(seed, trips=10, riders=30)
    pairs = feasible_pairs(
        batch.trips, batch.riders, router=ROUTER, limits=LIMITS, resolution=RESOLUTION
    )
    greedy = assign_greedy(
        batch.trips,
        batch.riders,
        pairs,
        router=ROUTER,
        limits=LIMITS,
        max_new_riders_per_trip=max_new,
    )
    exact = assign_exact(
        batch.trips,
        batch.riders,
        pairs,
        router=ROUTER,
        limits=LIMITS,
        max_new_riders_per_trip=max_new,
    )
    result = propose_matches(
        batch.trips,
        batch.riders,
        router=ROUTER,
        limits=LIMITS,
        resolution=RESOLUTION,
        max_new_riders_per_trip=max_new,
    )
    assert exact.riders_served >= result.riders_served >= greedy.riders_served
    bound = matching_bound(
        batch.trips,
        batch.riders,
        router=ROUTER,
        limits=LIMITS,
        resolution=RESOLUTION,
        max_new_riders_per_trip=max_new,
    )
    assert bound >= exact.riders_served


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), seats=st.integers(1, 4), riders=st.integers(5, 60))
def test_the_sparse_solver_on_either_side_finds_the_dense_optimum(
    seed: int, seats: int, riders: int
) -> None:
    """More seats than riders or fewer: the sparse solver augments the smaller side."""
    rng = np.random.default_rng(seed)
    trips = 12
    t = rng.integers(0, trips, 80)
    r = rng.integers(0, riders, 80)
    unique = np.unique(t * riders + r)
    t, r = unique // riders, unique % riders
    values = 1_000.0 + rng.uniform(-10, 10, len(t))
    slots = rng.integers(0, seats + 1, trips)
    dense = assignment._match(t, r, values, slots)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assignment, "_DENSE_MAX_CELLS", 0)
        sparse = assignment._match(t, r, values, slots)
    for chosen in (dense, sparse):
        assert len(set(r[chosen].tolist())) == len(chosen)
        assert all(np.bincount(t[chosen], minlength=trips) <= slots)
    assert len(dense) == len(sparse)
    assert values[dense].sum() == pytest.approx(values[sparse].sum())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), parts=st.integers(2, 6), dense=st.booleans())
def test_a_graph_of_several_parts_solved_part_by_part_has_the_whole_graphs_optimum(
    seed: int, parts: int, dense: bool
) -> None:
    """Disjoint corridors (riders and trips of one never pair with another's), solved each on
    its own: the same total value as one assignment of the whole graph, each rider and each
    seat once."""
    rng = np.random.default_rng(seed)
    rows_per_part, columns_per_part = int(rng.integers(1, 15)), int(rng.integers(1, 15))
    edges = [
        (part * rows_per_part + row, part * columns_per_part + column)
        for part in range(parts)
        for row in range(rows_per_part)
        for column in range(columns_per_part)
        if rng.random() < 0.4
    ]
    if not edges:
        return
    rows = np.array([e[0] for e in edges], dtype=np.int64)
    columns = np.array([e[1] for e in edges], dtype=np.int64)
    values = 1_000.0 + rng.uniform(-10, 10, len(edges))
    n_rows, n_columns = parts * rows_per_part, parts * columns_per_part
    with pytest.MonkeyPatch.context() as patch:
        if not dense:
            patch.setattr(assignment, "_DENSE_MAX_CELLS", 0)
        whole_rows, whole_columns = assignment._assign(rows, columns, values, n_rows, n_columns)
        split_rows, split_columns = assignment._assign_parts(
            rows, columns, values, n_rows, n_columns
        )
    value_of = {
        (a, b): v for a, b, v in zip(rows.tolist(), columns.tolist(), values.tolist(), strict=True)
    }
    split = list(zip(split_rows.tolist(), split_columns.tolist(), strict=True))
    whole = list(zip(whole_rows.tolist(), whole_columns.tolist(), strict=True))
    chosen = [key for key in split if key in value_of]
    assert len({a for a, _ in chosen}) == len(chosen) == len({b for _, b in chosen})
    assert sum(value_of[key] for key in chosen) == pytest.approx(
        sum(value_of[key] for key in whole if key in value_of)
    )


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_new=st.integers(2, 4))
def test_a_small_batch_with_several_riders_a_trip_gets_the_exact_joint_optimum(
    seed: int, max_new: int
) -> None:
    batch = small_city(seed, trips=8, riders=24)
    pairs = feasible_pairs(
        batch.trips, batch.riders, router=ROUTER, limits=LIMITS, resolution=RESOLUTION
    )
    assert len(pairs) <= assignment.DEFAULT_EXACT_MAX_PAIRS
    exact = assign_exact(
        batch.trips,
        batch.riders,
        pairs,
        router=ROUTER,
        limits=LIMITS,
        max_new_riders_per_trip=max_new,
    )
    result = propose_matches(
        batch.trips,
        batch.riders,
        router=ROUTER,
        limits=LIMITS,
        resolution=RESOLUTION,
        max_new_riders_per_trip=max_new,
    )
    assert_within_every_limit(batch, result, ROUTER)
    assert result.riders_served == exact.riders_served
    assert result.saved_km == pytest.approx(exact.saved_km)


def test_a_trip_with_too_many_plans_to_enumerate_falls_back_to_the_heuristics() -> None:
    batch = small_city(4, trips=8, riders=24)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assignment, "_EXACT_MAX_PLANS_PER_TRIP", 1)
        result = propose_matches(
            batch.trips,
            batch.riders,
            router=ROUTER,
            limits=LIMITS,
            resolution=RESOLUTION,
            max_new_riders_per_trip=3,
        )
    assert_within_every_limit(batch, result, ROUTER)
    assert result.riders_served > 0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), aboard=st.booleans())
def test_each_feasible_pair_carries_the_scalar_best_insertion(seed: int, aboard: bool) -> None:
    batch = small_city(seed, trips=8, riders=30)
    if aboard:
        batch = with_riders_aboard(batch)
    pairs = feasible_pairs(
        batch.trips, batch.riders, router=ROUTER, limits=LIMITS, resolution=RESOLUTION
    )
    assert [(p.trip, p.rider) for p in pairs] == sorted((p.trip, p.rider) for p in pairs)
    for pair in pairs:
        expected = best_insertion(
            batch.trips[pair.trip], batch.riders[pair.rider], router=ROUTER, limits=LIMITS
        )
        assert expected is not None
        assert pair.insertion.stops == expected.stops
        assert pair.insertion.pickup_position == expected.pickup_position
        assert pair.insertion.dropoff_position == expected.dropoff_position
        assert pair.insertion.detour_km == pytest.approx(expected.detour_km, abs=1e-9)
        assert pair.insertion.added_km == pytest.approx(expected.added_km, abs=1e-9)
        assert pair.insertion.pickup_eta_s == pytest.approx(expected.pickup_eta_s, abs=1e-6)
        rider = batch.riders[pair.rider]
        own_km = ROUTER.distance_km(rider.pickup, rider.dropoff)
        assert pair.rider_km == pytest.approx(own_km, abs=1e-9)
        assert pair.saved_km == pytest.approx(own_km - expected.added_km, abs=1e-9)


def test_an_excluded_pair_naming_no_rider_of_the_batch_excludes_nothing() -> None:
    batch = small_city(3, riders=48)
    pairs = feasible_pairs(
        batch.trips, batch.riders, router=ROUTER, limits=LIMITS, resolution=RESOLUTION
    )
    # (t - 1, r + riders) would alias (t, r) in a flat key of trip x riders + rider.
    bogus = {(p.trip - 1, p.rider + len(batch.riders)) for p in pairs} | {(0, -1)}
    again = feasible_pairs(
        batch.trips,
        batch.riders,
        router=ROUTER,
        limits=LIMITS,
        resolution=RESOLUTION,
        excluded=bogus,
    )
    assert [(p.trip, p.rider) for p in again] == [(p.trip, p.rider) for p in pairs]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_new=st.integers(2, 4))
def test_the_repairs_only_ever_add_riders_to_the_rounds_answer(seed: int, max_new: int) -> None:
    batch = small_city(seed, trips=15, riders=60)

    def served(repaired: bool) -> Assignment:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(assignment, "GREEDY_MAX_PAIRS", 0)
            if not repaired:
                patch.setattr(assignment, "REPAIR_MAX_PAIRS", 0)
            return propose_matches(
                batch.trips,
                batch.riders,
                router=ROUTER,
                limits=LIMITS,
                resolution=RESOLUTION,
                max_new_riders_per_trip=max_new,
                exact_max_pairs=0,
            )

    rounds, repaired = served(False), served(True)
    assert_within_every_limit(batch, repaired, ROUTER)
    assert repaired.riders_served >= rounds.riders_served

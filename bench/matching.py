"""Matching benchmark (pure, no database): prints figures; run on demand, never in tests.

  `python -m bench.matching` (about 3 minutes here; COPOOL_BENCH_MATCHING_SCALE=0.5
  halves the batch sizes of part 2, COPOOL_BENCH_MATCHING_REPEAT=4 times each batch 4 times,
  at least 2; default 3)

Batches come from matching.synthetic, seeded: a city is a morning commute (20 km around
People's Square, Shanghai; 80 % of trips and rides end near one of 3 hubs; departures around a
peak, windows of 10-40 minutes; 1-4 seats a car, 1 seat a rider), intercity runs between 5
towns 50-400 km apart.

1. Against the exact answer: small seeded batches (12 each) where the exact optimum can be
   computed: the pairwise optimum with one new rider a trip (an independent dense
   linear_sum_assignment), the enumerated joint optimum (`assign_exact`, milp) with several.
   propose_matches' riders served and distance saved as a share of it, and of the maximum
   matching bound.
2. Batch sizes, up to 20,000 requests x 4,000 offers: propose_matches end to end (arrays of
   the batch, corridor join, feasibility, assignment, proposals), the maximum matching bound
   (every pair that fits alone, one rider a seat), service rate, detour ratios, distance saved.

Router: the estimating router (circuity 1.3, 30 km/h in town, 80 km/h between towns) on the
sphere; one line repeats a city batch on the ellipsoid (geopy's geodesic) for its cost.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np
from scipy.optimize import linear_sum_assignment

from matching import threads
from matching.assignment import (
    Assignment,
    Pair,
    assign_exact,
    feasible_pairs,
    matching_bound,
    propose_matches,
)
from matching.feasibility import InsertionLimits, route_km
from matching.geometry import geodesic_km
from matching.routing import Earth, EstimatingRouter, Router
from matching.synthetic import Batch, city_batch, intercity_batch

T = TypeVar("T")
P = ParamSpec("P")
SCALE = float(os.environ.get("COPOOL_BENCH_MATCHING_SCALE", "1"))
REPEAT = max(2, int(os.environ.get("COPOOL_BENCH_MATCHING_REPEAT", "3")))
CITY = EstimatingRouter(average_speed_kmh=30.0, earth=Earth.SPHERE)
CITY_ELLIPSOID = EstimatingRouter(average_speed_kmh=30.0)
INTERCITY = EstimatingRouter(average_speed_kmh=80.0, earth=Earth.SPHERE)
LIMITS = InsertionLimits(max_added_delay_s=600.0)
INTERCITY_LIMITS = InsertionLimits(max_added_delay_s=1_800.0)
RESOLUTION = 7
INTERCITY_RESOLUTION = 5
SMALL_BATCHES = 12
MID_BATCHES = 4


def timed(run: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[T, float]:
    start = time.perf_counter()
    result = run(*args, **kwargs)
    return result, time.perf_counter() - start


def pairwise_optimum(batch: Batch, pairs: list[Pair]) -> tuple[int, float]:
    """The exact optimum with one new rider a trip, solved independently of propose_matches:
    a dense linear_sum_assignment of riders to trips (lexicographic: riders, then km)."""
    if not pairs:
        return 0, 0.0
    saved = np.array([p.saved_km for p in pairs])
    big = 1.0 + 2.0 * float(np.abs(saved).sum())
    cost = np.zeros((len(batch.riders), len(batch.trips)))
    for pair, value in zip(pairs, saved.tolist(), strict=True):
        cost[pair.rider, pair.trip] = -(big + value)
    rows, columns = linear_sum_assignment(cost)
    chosen = cost[rows, columns] < 0
    return int(chosen.sum()), float(-cost[rows, columns][chosen].sum() - big * chosen.sum())


def exact_table() -> None:
    print(
        f"1. propose_matches against the exact optimum ({SMALL_BATCHES} seeded batches each, "
        f"{MID_BATCHES} of 200 x 1,000)"
    )
    print(
        f"{'mode':>9} {'r/trip':>6} {'batch':>8} {'bound':>6} {'exact':>6} {'served':>6} "
        f"{'/exact':>7} {'worst':>6} {'/bound':>7} {'saved':>6} {'heur.':>6} {'/exact':>7} "
        f"{'saved':>6} {'exact s':>8} {'propose s':>9}"
    )
    shapes: list[
        tuple[str, int, int, int, Callable[[int], Batch], Router, InsertionLimits, int, int]
    ]
    shapes = []
    for max_new, trips, riders in ((1, 60, 180), (2, 30, 90), (4, 30, 90)):
        shapes.append(
            (
                "city",
                max_new,
                trips,
                riders,
                lambda seed, t=trips, r=riders: city_batch(
                    np.random.default_rng(seed),
                    trips=t,
                    riders=r,
                    radius_km=5.0,
                    rider_seats=(1, 2),
                ),
                CITY,
                LIMITS,
                RESOLUTION,
                SMALL_BATCHES,
            )
        )
    # A whole city's commute, where the heuristics alone decide beyond 3,000 pairs.
    shapes.append(
        (
            "city",
            2,
            200,
            1_000,
            lambda seed: city_batch(np.random.default_rng(seed), trips=200, riders=1_000),
            CITY,
            LIMITS,
            RESOLUTION,
            MID_BATCHES,
        )
    )
    for max_new, trips, riders in ((1, 60, 180), (2, 20, 60)):
        shapes.append(
            (
                "intercity",
                max_new,
                trips,
                riders,
                lambda seed, t=trips, r=riders: intercity_batch(
                    np.random.default_rng(seed), trips=t, riders=r, spread_s=3 * 3_600.0
                ),
                INTERCITY,
                INTERCITY_LIMITS,
                INTERCITY_RESOLUTION,
                SMALL_BATCHES,
            )
        )
    for mode, max_new, trips, riders, make, router, limits, resolution, batches in shapes:
        bound_total = exact_served = served = heuristic_served = 0
        exact_saved = saved = heuristic_saved = exact_s = propose_s = 0.0
        worst = 1.0
        for seed in range(batches):
            batch = make(seed)
            pairs = feasible_pairs(
                batch.trips, batch.riders, router=router, limits=limits, resolution=resolution
            )
            if max_new == 1:
                (count, km), seconds = timed(pairwise_optimum, batch, pairs)
            else:
                exact, seconds = timed(
                    assign_exact,
                    batch.trips,
                    batch.riders,
                    pairs,
                    router=router,
                    limits=limits,
                    max_new_riders_per_trip=max_new,
                )
                count, km = exact.riders_served, exact.saved_km
            result, propose_time = timed(
                propose_matches,
                batch.trips,
                batch.riders,
                router=router,
                limits=limits,
                resolution=resolution,
                max_new_riders_per_trip=max_new,
            )
            heuristic = propose_matches(
                batch.trips,
                batch.riders,
                router=router,
                limits=limits,
                resolution=resolution,
                max_new_riders_per_trip=max_new,
                exact_max_pairs=0,
            )
            heuristic_served += heuristic.riders_served
            heuristic_saved += heuristic.saved_km
            bound_total += matching_bound(
                batch.trips,
                batch.riders,
                router=router,
                limits=limits,
                resolution=resolution,
                max_new_riders_per_trip=max_new,
            )
            exact_served += count
            exact_saved += km
            served += result.riders_served
            saved += result.saved_km
            exact_s += seconds
            propose_s += propose_time
            if count:
                worst = min(worst, result.riders_served / count)
        print(
            f"{mode:>9} {max_new:>6} {f'{trips}x{riders}':>8} {bound_total:>6} "
            f"{exact_served:>6} {served:>6} {served / exact_served:>7.3f} {worst:>6.3f} "
            f"{served / bound_total:>7.3f} {saved / exact_saved:>6.3f} {heuristic_served:>6} "
            f"{heuristic_served / exact_served:>7.3f} {heuristic_saved / exact_saved:>6.3f} "
            f"{exact_s / batches:>8.3f} {propose_s / batches:>9.3f}"
        )
    print(
        "  bound: the maximum matching of riders to seats, every pair that fits alone\n"
        "  considered; exact: the optimum's riders (one rider a trip: a dense\n"
        "  linear_sum_assignment; several: assign_exact's milp over every plan); served: what\n"
        "  propose_matches serves (it solves batches this small exactly); /exact, worst,\n"
        "  /bound: its share of the exact riders (all batches, the worst batch) and of the\n"
        "  bound; saved: its distance saved as a share of the exact optimum's; heur.: the same\n"
        "  for its heuristics alone (exact_max_pairs=0: the rounds of assignments and the\n"
        "  greedy heuristic, the better one); times per batch (propose_matches end to end);\n"
        "  200x1000 is a whole city (20 km): propose_matches runs its heuristics there."
    )


def detour_ratios(batch: Batch, result: Assignment, router: Router) -> tuple[float, float]:
    ratios = []
    for t in {p.trip for p in result.proposals}:
        direct = router.distance_km(batch.trips[t].origin, batch.trips[t].destination)
        if direct > 0:
            ratios.append(route_km(result.plans[t], router) / direct)
    if not ratios:
        return 1.0, 1.0
    return float(np.mean(ratios)), float(np.percentile(ratios, 95))


def _one_thread_s(
    batch: Batch, router: Router, limits: InsertionLimits, resolution: int, max_new: int
) -> float:
    """One more run with the batch's chunks in the caller's thread alone: the baseline of
    matching.threads (the runs before used every core)."""
    workers, threads.WORKERS = threads.WORKERS, 1
    try:
        return _timed_propose(batch, router, limits, resolution, max_new)[1]
    finally:
        threads.WORKERS = workers


def _timed_propose(
    batch: Batch, router: Router, limits: InsertionLimits, resolution: int, max_new: int
) -> tuple[Assignment, float]:
    geodesic_km.cache_clear()  # (each run asks the ellipsoid afresh)
    return timed(
        propose_matches,
        batch.trips,
        batch.riders,
        router=router,
        limits=limits,
        resolution=resolution,
        max_new_riders_per_trip=max_new,
    )


def size_table() -> None:
    print(
        "\n2. Batch sizes (propose_matches end to end; first s: its first run in this process, "
        f"again s: the median of {REPEAT - 1} more)"
    )
    print(
        f"{'mode':>9} {'trips':>6} {'riders':>7} {'r/trip':>6} {'served':>7} {'service':>7} "
        f"{'bound':>7} {'/bound':>7} {'detour':>7} {'p95':>6} {'saved km':>10} "
        f"{'saved %':>7} {'first s':>8} {'again s':>8} {'1 thr s':>8} {'bound s':>8}"
    )
    runs: list[tuple[str, Batch, Router, InsertionLimits, int]] = []
    for trips, riders in ((200, 1_000), (1_000, 5_000), (4_000, 20_000)):
        trips, riders = int(trips * SCALE), int(riders * SCALE)
        runs.append(
            (
                "city",
                city_batch(np.random.default_rng(1), trips=trips, riders=riders),
                CITY,
                LIMITS,
                RESOLUTION,
            )
        )
        runs.append(
            (
                "intercity",
                intercity_batch(np.random.default_rng(2), trips=trips, riders=riders),
                INTERCITY,
                INTERCITY_LIMITS,
                INTERCITY_RESOLUTION,
            )
        )
    runs.append(
        (
            "ellipsoid",
            city_batch(np.random.default_rng(1), trips=200, riders=1_000),
            CITY_ELLIPSOID,
            LIMITS,
            RESOLUTION,
        )
    )
    for mode, batch, router, limits, resolution in runs:
        for max_new in (1, 4):
            seconds = []
            result = None
            for _ in range(REPEAT):
                result, elapsed = _timed_propose(batch, router, limits, resolution, max_new)
                seconds.append(elapsed)
            assert result is not None
            one_thread_s = _one_thread_s(batch, router, limits, resolution, max_new)
            bound, bound_s = timed(
                matching_bound,
                batch.trips,
                batch.riders,
                router=router,
                limits=limits,
                resolution=resolution,
                max_new_riders_per_trip=max_new,
            )
            # The matcher runs batch after batch in a worker: the first run of a batch in a
            # process also pays for its memory's first use (page faults), the rest show the
            # steady state.
            again = statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan")
            mean, p95 = detour_ratios(batch, result, router)
            solo_km = sum(p.rider_km for p in result.proposals)
            print(
                f"{mode:>9} {len(batch.trips):>6} {len(batch.riders):>7} {max_new:>6} "
                f"{result.riders_served:>7} {result.riders_served / len(batch.riders):>7.3f} "
                f"{bound:>7} {result.riders_served / max(1, bound):>7.3f} {mean:>7.3f} "
                f"{p95:>6.3f} {result.saved_km:>10.0f} "
                f"{100 * result.saved_km / max(1e-9, solo_km):>7.1f} "
                f"{seconds[0]:>8.2f} {again:>8.2f} {one_thread_s:>8.2f} {bound_s:>8.2f}"
            )
    print(
        "  r/trip: new riders a trip at most; service: riders served / riders; bound: the\n"
        "  maximum matching of riders to seats (min(seats, r/trip) a trip), every pair that\n"
        "  fits alone considered (with 1 r/trip it is the exact optimum's count, which\n"
        "  propose_matches then solves exactly); detour: route / direct road distance of the\n"
        "  trips used (mean, p95); saved km: the riders' solo road km less the km their\n"
        "  drivers add, saved %: that as a share of the served riders' solo km; first s and\n"
        f"  again s use {threads.WORKERS} threads (matching.threads), 1 thr s one more run in one."
    )


if __name__ == "__main__":
    exact_table()
    size_table()

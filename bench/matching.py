"""Matching benchmark (pure, no database): prints figures; run on demand, never in tests.

  `python -m bench.matching` (about 30 s on one core; COPOOL_BENCH_MATCHING_SCALE=2 doubles
  the batch sizes of part 2)

1. The heuristic's gap: seeded city batches small enough for the exact answer; riders served
   and distance saved by the greedy heuristic as a share of the exact optimum (the pairwise
   optimum with one new rider per trip, the enumerated joint optimum with several), the share of
   the pairwise upper bound, and solve times.
2. Batch sizes: city (a morning commute towards 3 hubs) and intercity batches, from hundreds to
   thousands of riders: candidate pairs from the corridor index against all pairs, time to find
   the feasible pairs, time of the exact pairwise solver and of the heuristic, riders served
   against the pairwise bound, mean and p95 detour ratio (route / direct) of the trips used.

Router: the estimating router (circuity 1.3, 30 km/h in town, 80 km/h between towns) on the
sphere; one line repeats a city batch on the ellipsoid (geopy's geodesic) for its cost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np

from matching.assignment import (
    Assignment,
    assign_exact,
    assign_greedy,
    feasible_pairs,
    solve_pairwise,
)
from matching.feasibility import InsertionLimits, route_km
from matching.routing import Earth, EstimatingRouter, Router
from matching.synthetic import Batch, city_batch, intercity_batch

T = TypeVar("T")
P = ParamSpec("P")
SCALE = float(os.environ.get("COPOOL_BENCH_MATCHING_SCALE", "1"))
CITY = EstimatingRouter(average_speed_kmh=30.0, earth=Earth.SPHERE)
CITY_ELLIPSOID = EstimatingRouter(average_speed_kmh=30.0)
INTERCITY = EstimatingRouter(average_speed_kmh=80.0, earth=Earth.SPHERE)
LIMITS = InsertionLimits(max_added_delay_s=600.0)
INTERCITY_LIMITS = InsertionLimits(max_added_delay_s=1_800.0)
RESOLUTION = 7
INTERCITY_RESOLUTION = 5


def timed(run: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[T, float]:
    start = time.perf_counter()
    result = run(*args, **kwargs)
    return result, time.perf_counter() - start


def gap_table() -> None:
    print("1. Heuristic against the exact answer (12 seeded city batches each, 5 km radius)")
    print(
        f"{'riders/trip':>11} {'batch':>9} {'exact':>6} {'heur.':>6} {'served':>7} "
        f"{'worst':>6} {'saved':>6} {'bound':>6} {'exact s':>8} {'heur. s':>8}"
    )
    for max_new, trips, riders in ((1, 60, 180), (2, 30, 90), (4, 30, 90)):
        exact_served = heuristic_served = bound_served = 0
        exact_saved = heuristic_saved = 0.0
        exact_s = heuristic_s = 0.0
        worst = 1.0
        for seed in range(12):
            batch = city_batch(
                np.random.default_rng(seed),
                trips=trips,
                riders=riders,
                radius_km=5.0,
                seats=(1, 4),
                rider_seats=(1, 2),
            )
            pairs = feasible_pairs(
                batch.trips, batch.riders, router=CITY, limits=LIMITS, resolution=RESOLUTION
            )
            bound, bound_time = timed(
                solve_pairwise, batch.trips, batch.riders, pairs, max_new_riders_per_trip=max_new
            )
            if max_new == 1:
                served, saved, exact_time = len(bound), sum(p.saved_km for p in bound), bound_time
            else:
                exact, exact_time = timed(
                    assign_exact,
                    batch.trips,
                    batch.riders,
                    pairs,
                    router=CITY,
                    limits=LIMITS,
                    max_new_riders_per_trip=max_new,
                )
                served, saved = exact.riders_served, exact.saved_km
            heuristic, heuristic_time = timed(
                assign_greedy,
                batch.trips,
                batch.riders,
                pairs,
                router=CITY,
                limits=LIMITS,
                max_new_riders_per_trip=max_new,
            )
            exact_served += served
            heuristic_served += heuristic.riders_served
            bound_served += len(bound)
            exact_saved += saved
            heuristic_saved += heuristic.saved_km
            exact_s += exact_time
            heuristic_s += heuristic_time
            if served:
                worst = min(worst, heuristic.riders_served / served)
        print(
            f"{max_new:>11} {f'{trips}x{riders}':>9} {exact_served:>6} {heuristic_served:>6} "
            f"{heuristic_served / exact_served:>7.3f} {worst:>6.3f} "
            f"{heuristic_saved / exact_saved:>6.3f} {heuristic_served / bound_served:>6.3f} "
            f"{exact_s / 12:>8.3f} {heuristic_s / 12:>8.3f}"
        )
    print(
        "  served, worst, saved: the heuristic's share of the exact answer (all batches, the\n"
        "  worst batch, distance saved); bound: its share of the pairwise upper bound; times\n"
        "  per batch, after the feasible pairs. With 1 rider per trip the exact answer is the\n"
        "  pairwise optimum (what propose_matches returns); with more it is the enumerated\n"
        "  joint optimum (assign_exact)."
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


def size_table() -> None:
    print("\n2. Batch sizes (up to 4 new riders a trip; times in seconds)")
    print(
        f"{'mode':>10} {'trips':>6} {'riders':>7} {'cand.':>8} {'of all':>7} {'pairs':>7} "
        f"{'pairs s':>8} {'exact s':>8} {'heur. s':>8} {'served':>7} {'/bound':>7} "
        f"{'1/trip':>7} {'detour':>7} {'p95':>6}"
    )
    runs: list[tuple[str, Batch, Router, InsertionLimits, int]] = []
    for trips, riders in ((200, 1_000), (1_000, 5_000)):
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
            "ellipsoid",
            city_batch(np.random.default_rng(1), trips=200, riders=1_000),
            CITY_ELLIPSOID,
            LIMITS,
            RESOLUTION,
        )
    )
    for trips, riders in ((200, 1_000), (500, 2_500)):
        trips, riders = int(trips * SCALE), int(riders * SCALE)
        runs.append(
            (
                "intercity",
                intercity_batch(np.random.default_rng(2), trips=trips, riders=riders),
                INTERCITY,
                INTERCITY_LIMITS,
                INTERCITY_RESOLUTION,
            )
        )
    for mode, batch, router, limits, resolution in runs:
        candidates = _count_candidates(batch, router, resolution)
        pairs, pairs_s = timed(
            feasible_pairs,
            batch.trips,
            batch.riders,
            router=router,
            limits=limits,
            resolution=resolution,
        )
        bound, exact_s = timed(
            solve_pairwise, batch.trips, batch.riders, pairs, max_new_riders_per_trip=4
        )
        one = solve_pairwise(batch.trips, batch.riders, pairs, max_new_riders_per_trip=1)
        greedy, greedy_s = timed(
            assign_greedy,
            batch.trips,
            batch.riders,
            pairs,
            router=router,
            limits=limits,
            max_new_riders_per_trip=4,
        )
        mean, p95 = detour_ratios(batch, greedy, router)
        all_pairs = len(batch.trips) * len(batch.riders)
        print(
            f"{mode:>10} {len(batch.trips):>6} {len(batch.riders):>7} {candidates:>8} "
            f"{candidates / all_pairs:>7.3f} {len(pairs):>7} {pairs_s:>8.2f} {exact_s:>8.3f} "
            f"{greedy_s:>8.3f} {greedy.riders_served:>7} "
            f"{greedy.riders_served / max(1, len(bound)):>7.3f} {len(one):>7} "
            f"{mean:>7.3f} {p95:>6.3f}"
        )
    print(
        "  cand.: pairs the corridor index proposes (of all: their share of trips x riders);\n"
        "  pairs: those feasible; exact s: the pairwise solver (4 rider slots a trip);\n"
        "  served: riders the heuristic places, /bound: as a share of the pairwise bound;\n"
        "  1/trip: the exact optimum with one new rider a trip; detour: route / direct road\n"
        "  distance of the trips used (mean, p95)."
    )


def _count_candidates(batch: Batch, router: Router, resolution: int) -> int:
    from matching.index import SpatialIndex, corridor_reach_km
    from matching.routing import min_circuity

    index = SpatialIndex(
        [r.pickup for r in batch.riders], [r.dropoff for r in batch.riders], resolution=resolution
    )
    total = 0
    for trip in batch.trips:
        reach = corridor_reach_km(
            direct_road_km=router.distance_km(trip.origin, trip.destination),
            max_detour_km=trip.max_detour_km,
            min_circuity=min_circuity(router),
        )
        total += len(index.candidates(trip.origin, trip.destination, reach_km=reach))
    return total


if __name__ == "__main__":
    gap_table()
    size_table()

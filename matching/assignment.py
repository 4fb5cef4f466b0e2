"""Assigning a batch of riders to a batch of trips: the most riders first, then the most distance
saved (pure: plain values in, plain values out; no clock, so the caller times it).

Distance saved by a rider = the rider's own direct road distance (what they would have driven
alone) minus the road distance their driver adds to carry them. The objective is lexicographic:
one more rider served beats any amount of distance.

The feasible pairs come from `corridor.candidate_pairs` (a numpy join of the trips with h3
groups of riders: never all pairs) checked by `insertion.best_insertions` (best_insertion's
rules for many pairs at once). Then, by batch shape (`propose_matches`):
- one new rider a trip: the exact optimum, a linear assignment of riders to trips (scipy's
  dense `linear_sum_assignment`, or its sparse sibling LAPJVsp, augmenting the smaller side);
- several, small batches: `assign_exact`, the optimum over every plan best insertions can build
  in any order (enumerated per trip, then `milp` picks);
- several, larger batches: rounds of seat assignments on the plans as arrays
  (`_assign_in_rounds`), and up to GREEDY_MAX_PAIRS pairs also `assign_greedy` (the most
  constrained riders first, each into the trip that saves the most, then small repairs); the
  better answer wins.
`solve_pairwise` is the pairwise model (each pair judged alone, up to max_new riders a trip);
`matching_bound` the maximum matching of riders to seats over every pair that fits alone, the
upper bound the benchmark measures against; `measure_gap` compares the greedy heuristic with the
exact answer on batches the caller generates.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Sequence
from typing import TypeAlias

import msgspec
import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linear_sum_assignment, milp
from scipy.sparse.csgraph import (
    connected_components,
    maximum_bipartite_matching,
    min_weight_full_bipartite_matching,
)

from matching import threads
from matching.corridor import RiderArrays, TripArrays, candidate_pairs
from matching.feasibility import (
    Insertion,
    InsertionLimits,
    Rider,
    Stop,
    StopKind,
    Trip,
    best_insertion,
    detour_km,
    rider_etas_s,
    with_rider,
)
from matching.insertion import Plans, best_insertions, final_etas_s, heading_fits
from matching.routing import Router
from matching.synthetic import Batch

#: A rider placed in a plan: (rider, road km the insertion added, the rider's own road km).
_Placed: TypeAlias = tuple[int, float, float]

#: A batch has at most this many trips and riders (TigerBeetle: a limit on everything).
MAX_BATCH_TRIPS = 50_000
MAX_BATCH_RIDERS = 200_000
#: Up to this many cells (riders x rider slots) the dense assignment matrix is cheap enough.
_DENSE_MAX_CELLS = 4_000_000
#: Up to this many feasible pairs (and several riders a trip) propose_matches also runs the
#: greedy heuristic (Python, about 0.1 ms a pair) and keeps the better answer.
GREEDY_MAX_PAIRS = 3_000
#: Up to this many feasible pairs (several riders a trip) the rounds' answer is repaired by the
#: greedy heuristic's repairs, trying at most REPAIR_INSERTIONS insertions (~40 us each).
REPAIR_MAX_PAIRS = 20_000
REPAIR_INSERTIONS = 20_000
#: After the first assignment, at most this many rounds place the riders left.
_REPAIR_ROUNDS = 8
#: ... each seeing, for each seat left in a trip, the trip's this many best riders (the others
#: rarely win a seat, and the assignment is then a fraction of the size: measured).
_RIDERS_PER_SEAT = 20
#: Up to this many feasible pairs, propose_matches solves several-riders-a-trip batches exactly
#: (assign_exact: about 0.1 s at this size with up to 4 new riders a trip).
DEFAULT_EXACT_MAX_PAIRS = 150
#: ... and gives up (for the heuristics) on a trip with more insertion sequences than this.
_EXACT_MAX_PLANS_PER_TRIP = 2_000
#: assign_exact enumerates at most this many insertion sequences per trip.
MAX_PLANS_PER_TRIP = 20_000
#: How many times the greedy heuristic sweeps the riders it left out for a repair.
_IMPROVEMENT_PASSES = 3
#: The repairs try at most this many insertions per feasible pair of the batch.
_REPAIR_INSERTIONS_PER_PAIR = 4
#: A two-for-one repair tries at most this many partners left out.
_MAX_PARTNERS = 8


class Pair(msgspec.Struct, frozen=True, kw_only=True):
    """A rider who fits a trip alone, with the best insertion into the trip as given."""

    trip: int
    rider: int
    insertion: Insertion
    #: The rider's own direct road distance.
    rider_km: float
    #: rider_km minus the distance the insertion adds to the driver's route.
    saved_km: float


class Proposal(msgspec.Struct, frozen=True, kw_only=True):
    """A rider placed in a trip, with the ETAs and the trip's detour of the final plan."""

    trip: int
    rider: int
    pickup_eta_s: float
    dropoff_eta_s: float
    #: The trip's whole detour with every rider of the plan (what max_detour_km bounds).
    detour_km: float
    #: What this rider added to the route when inserted.
    added_km: float
    rider_km: float
    saved_km: float


class Assignment(msgspec.Struct, frozen=True, kw_only=True):
    """The proposals of a batch (by rider) and each trip's final plan (new riders appended)."""

    proposals: tuple[Proposal, ...]
    plans: tuple[Trip, ...]

    @property
    def riders_served(self) -> int:
        return len(self.proposals)

    @property
    def saved_km(self) -> float:
        return sum(p.saved_km for p in self.proposals)


class Gap(msgspec.Struct, frozen=True, kw_only=True):
    """The greedy heuristic against the exact answer, summed over several batches.

    exact: the true optimum (the pairwise one with one new rider per trip, `assign_exact` with
    more). bound: the pairwise optimum, an upper bound on riders served with any number."""

    batches: int
    riders: int
    bound_served: int
    exact_served: int
    heuristic_served: int
    exact_saved_km: float
    heuristic_saved_km: float
    #: The lowest served share (heuristic / exact) of a single batch.
    worst_served_share: float

    @property
    def served_share(self) -> float:
        """Riders the heuristic serves, as a share of the exact answer's."""
        return self.heuristic_served / self.exact_served if self.exact_served else 1.0

    @property
    def bound_share(self) -> float:
        """Riders the heuristic serves, as a share of the pairwise upper bound."""
        return self.heuristic_served / self.bound_served if self.bound_served else 1.0

    @property
    def saved_share(self) -> float:
        """Distance the heuristic saves, as a share of the exact answer's."""
        return self.heuristic_saved_km / self.exact_saved_km if self.exact_saved_km else 1.0


def feasible_pairs(
    trips: Sequence[Trip],
    riders: Sequence[Rider],
    *,
    router: Router,
    limits: InsertionLimits,
    resolution: int,
    excluded: Collection[tuple[int, int]] = (),
) -> list[Pair]:
    """Every (trip, rider) pair where the rider fits the trip alone, by trip then rider.

    Candidates come from the corridor join (never all pairs); each is checked by the rules of
    best_insertion, with numpy (`insertion.best_insertions`).
    excluded: (trip, rider) pairs never to pair again (a driver declined that rider)."""
    found = _feasible(
        trips,
        riders,
        router=router,
        limits=limits,
        resolution=resolution,
        max_new=1,
        excluded=excluded,
    )
    return _pairs_of(trips, found)


def _pairs_of(trips: Sequence[Trip], found: _Feasible) -> list[Pair]:
    """The feasible pairs as Pair values, by trip then rider."""
    pairs = []
    order = np.lexsort((found.r, found.t))
    for k in order.tolist():
        t, r = int(found.t[k]), int(found.r[k])
        trip = trips[t]
        i, j = int(found.i[k]), int(found.j[k])
        stops = list(trip.stops)
        new_rider = len(trip.riders)
        stops.insert(j, Stop(new_rider, StopKind.DROPOFF))
        stops.insert(i, Stop(new_rider, StopKind.PICKUP))
        route = float(found.route_km[k])
        insertion = Insertion(
            stops=tuple(stops),
            pickup_position=i,
            dropoff_position=j + 1,
            route_km=route,
            detour_km=route - float(found.plans.trips.direct_km[t]),
            added_km=float(found.added_km[k]),
            pickup_eta_s=float(found.pickup_eta_s[k]),
            dropoff_eta_s=float(found.dropoff_eta_s[k]),
        )
        own_km = float(found.rider_km[r])
        pairs.append(
            Pair(
                trip=t,
                rider=r,
                insertion=insertion,
                rider_km=own_km,
                saved_km=own_km - insertion.added_km,
            )
        )
    return pairs


class _Feasible(msgspec.Struct):
    """The feasible pairs of a batch as arrays, with the plans they were checked against."""

    plans: Plans
    riders: RiderArrays
    #: The riders' own road distances (by rider).
    rider_km: NDArray[np.float64]
    t: NDArray[np.int64]
    r: NDArray[np.int64]
    i: NDArray[np.int64]
    j: NDArray[np.int64]
    route_km: NDArray[np.float64]
    added_km: NDArray[np.float64]
    pickup_eta_s: NDArray[np.float64]
    dropoff_eta_s: NDArray[np.float64]


def _feasible(
    trips: Sequence[Trip],
    riders: Sequence[Rider],
    *,
    router: Router,
    limits: InsertionLimits,
    resolution: int,
    max_new: int,
    excluded: Collection[tuple[int, int]],
) -> _Feasible:
    _check_batch(trips, riders)
    trip_arrays = TripArrays.of(trips, router)
    rider_arrays = RiderArrays.of(riders)
    t, r = candidate_pairs(trip_arrays, rider_arrays, router=router, resolution=resolution)
    if excluded and len(t):
        declined = np.array(sorted(excluded), dtype=np.int64).reshape(-1, 2)
        declined = declined[(declined[:, 1] >= 0) & (declined[:, 1] < len(riders))]
        keys = declined[:, 0] * max(1, len(riders)) + declined[:, 1]
        keep = ~np.isin(t * max(1, len(riders)) + r, keys)
        t, r = t[keep], r[keep]
    heading_ok = heading_fits(trip_arrays, rider_arrays, t, r, limits.max_heading_diff_deg)
    t, r = t[heading_ok], r[heading_ok]
    plans = Plans(trips, trip_arrays, router=router, limits=limits, max_new_riders=max_new)
    found = best_insertions(plans, rider_arrays, t, r, heading_ok=np.ones(len(t), dtype=np.bool_))
    fits = found.fits
    t, r = t[fits], r[fits]
    rider_km = plans.own_legs(rider_arrays)[0]
    return _Feasible(
        plans,
        rider_arrays,
        rider_km,
        t,
        r,
        found.i[fits],
        found.j[fits],
        found.route_km[fits],
        found.added_km[fits],
        found.pickup_eta_s[fits],
        found.dropoff_eta_s[fits],
    )


def solve_pairwise(
    trips: Sequence[Trip],
    riders: Sequence[Rider],
    pairs: Sequence[Pair],
    *,
    max_new_riders_per_trip: int,
) -> list[Pair]:
    """The pairs of an optimal answer of the pairwise model (most riders, then most saved).

    The model: each rider in at most one trip, each trip with at most max_new_riders_per_trip
    riders, each of whom fits it alone. Seats are checked per pair, not summed: a seat freed at
    a drop-off can take the next rider, so summing would cut off real plans. It is the whole
    problem when max_new_riders_per_trip is 1, so the answer is the true optimum; with more it
    relaxes the joint rules, so its count bounds any real plan's from above."""
    if max_new_riders_per_trip < 1:
        raise ValueError("max_new_riders_per_trip must be >= 1")
    if not pairs:
        return []
    chosen = _solve_assignment(pairs, _lexicographic_values(pairs), max_new_riders_per_trip)
    return sorted((pairs[i] for i in chosen), key=lambda p: (p.trip, p.rider))


def assign_exact(
    trips: Sequence[Trip],
    riders: Sequence[Rider],
    pairs: Sequence[Pair],
    *,
    router: Router,
    limits: InsertionLimits,
    max_new_riders_per_trip: int,
    max_plans_per_trip: int = MAX_PLANS_PER_TRIP,
) -> Assignment:
    """The optimum (most riders, then most saved) over every plan that best insertions can build
    in any order, several riders per trip: each trip's feasible rider sets are enumerated, then
    an integer program picks one set per trip, each rider at most once. For small batches: a
    trip with more than max_plans_per_trip insertion sequences is refused (ValueError)."""
    options = _options_by_rider(pairs)
    plans: list[tuple[int, frozenset[int], Trip, tuple[_Placed, ...]]] = []
    by_trip: dict[int, list[Pair]] = {}
    for pair in pairs:
        by_trip.setdefault(pair.trip, []).append(pair)
    for t, candidates in sorted(by_trip.items()):
        plans.extend(
            _enumerate_plans(
                t,
                trips[t],
                candidates,
                riders,
                router,
                limits,
                max_new_riders_per_trip,
                max_plans_per_trip,
            )
        )
    if not plans:
        return Assignment(proposals=(), plans=tuple(trips))
    saved = np.array([sum(own - added for _, added, own in new) for *_, new in plans])
    widest: dict[int, float] = {}
    for (t, *_), value in zip(plans, np.abs(saved).tolist(), strict=True):
        widest[t] = max(widest.get(t, 0.0), value)
    big = 1.0 + 2.0 * sum(widest.values())
    values = big * np.array([len(members) for _, members, *_ in plans]) + saved
    rider_rows = {r: i for i, r in enumerate(sorted(options))}
    trip_rows = {t: len(rider_rows) + i for i, t in enumerate(sorted(by_trip))}
    rows, columns = [], []
    for column, (t, members, *_) in enumerate(plans):
        rows.append(trip_rows[t])
        columns.append(column)
        for r in members:
            rows.append(rider_rows[r])
            columns.append(column)
    matrix = sparse.csr_array(
        (np.ones(len(rows)), (rows, columns)), shape=(len(rider_rows) + len(trip_rows), len(plans))
    )
    result = milp(
        c=-values,
        constraints=LinearConstraint(matrix, -np.inf, np.ones(matrix.shape[0])),
        integrality=np.ones(len(plans)),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0},
    )
    if result.x is None or not result.success:
        raise RuntimeError(f"milp found no optimal answer: {result.message}")
    final = list(trips)
    added: dict[int, list[_Placed]] = {}
    for column, x in enumerate(result.x.tolist()):
        if x > 0.5:
            t, _, plan, new = plans[column]
            final[t] = plan
            added[t] = list(new)
    return _proposals(trips, final, added, router)


def _enumerate_plans(
    t: int,
    trip: Trip,
    candidates: Sequence[Pair],
    riders: Sequence[Rider],
    router: Router,
    limits: InsertionLimits,
    max_new: int,
    max_plans: int,
) -> list[tuple[int, frozenset[int], Trip, tuple[_Placed, ...]]]:
    """For each set of riders best insertions can place together in the trip (in some order),
    the plan saving the most."""
    best: dict[frozenset[int], tuple[float, Trip, tuple[_Placed, ...]]] = {}
    explored = 0

    def extend(plan: Trip, members: frozenset[int], new: tuple[_Placed, ...]) -> None:
        nonlocal explored
        for pair in candidates:
            if pair.rider in members:
                continue
            insertion = (
                pair.insertion
                if not members
                else best_insertion(plan, riders[pair.rider], router=router, limits=limits)
            )
            if insertion is None:
                continue
            explored += 1
            if explored > max_plans:
                raise ValueError(f"trip {t} has more than {max_plans} plans to enumerate")
            grown = members | {pair.rider}
            more = (*new, (pair.rider, insertion.added_km, pair.rider_km))
            next_plan = with_rider(plan, riders[pair.rider], insertion)
            saved = sum(own - added for _, added, own in more)
            if grown not in best or saved > best[grown][0]:
                best[grown] = (saved, next_plan, more)
            if len(grown) < max_new:
                extend(next_plan, grown, more)

    extend(trip, frozenset(), ())
    return [(t, members, plan, new) for members, (_, plan, new) in best.items()]


def assign_greedy(
    trips: Sequence[Trip],
    riders: Sequence[Rider],
    pairs: Sequence[Pair],
    *,
    router: Router,
    limits: InsertionLimits,
    max_new_riders_per_trip: int,
) -> Assignment:
    """A fast feasible answer. Repeatedly the rider with the fewest trips it still fits (ties:
    the one saving the most) goes into the trip where it saves the most; only the riders that
    could join that trip are re-checked against its new plan. Then small repairs for the riders
    left out (`_improve`)."""
    if max_new_riders_per_trip < 1:
        raise ValueError("max_new_riders_per_trip must be >= 1")
    options = _options_by_rider(pairs)
    own_km = {p.rider: p.rider_km for p in pairs}
    fits: dict[int, dict[int, Insertion]] = {
        r: {p.trip: p.insertion for p in found} for r, found in options.items()
    }
    wanting: dict[int, set[int]] = {}
    for pair in pairs:
        wanting.setdefault(pair.trip, set()).add(pair.rider)
    plans = list(trips)
    added: dict[int, list[_Placed]] = {}
    version = dict.fromkeys(options, 0)

    def urgency(r: int) -> tuple[int, float, int, int]:
        best_saved = max(own_km[r] - i.added_km for i in fits[r].values())
        return (len(fits[r]), -best_saved, r, version[r])

    heap = [urgency(r) for r in options]
    heapq.heapify(heap)
    while heap:
        _, _, r, seen = heapq.heappop(heap)
        if seen != version[r] or not fits[r]:
            continue  # placed, or an older entry of a rider whose options changed since
        version[r] = -1
        t = min(fits[r], key=lambda trip: (fits[r][trip].added_km - own_km[r], trip))
        insertion = fits[r][t]
        plans[t] = with_rider(plans[t], riders[r], insertion)
        added.setdefault(t, []).append((r, insertion.added_km, own_km[r]))
        for other_trip in fits[r]:
            wanting[other_trip].discard(r)
        fits[r] = {}
        full = len(added[t]) >= max_new_riders_per_trip
        # Re-checked at once, not when they come up: a rider whose options shrink must rise.
        for other in sorted(wanting[t]):
            again = (
                None
                if full
                else best_insertion(plans[t], riders[other], router=router, limits=limits)
            )
            if again is None:
                del fits[other][t]
                wanting[t].discard(other)
            else:
                fits[other][t] = again
            version[other] += 1
            if fits[other]:
                heapq.heappush(heap, urgency(other))
    _improve(trips, riders, options, plans, added, router, limits, max_new_riders_per_trip)
    return _proposals(trips, plans, added, router)


def propose_matches(
    trips: Sequence[Trip],
    riders: Sequence[Rider],
    *,
    router: Router,
    limits: InsertionLimits,
    resolution: int,
    max_new_riders_per_trip: int,
    exact_max_pairs: int = DEFAULT_EXACT_MAX_PAIRS,
    excluded: Collection[tuple[int, int]] = (),
) -> Assignment:
    """Riders assigned to trips for one batch: every proposal feasible with the rest of its plan.

    One new rider a trip: the exact optimum (a sparse linear assignment, any batch size).
    Several, and at most exact_max_pairs feasible pairs: the exact joint optimum (`assign_exact`),
    unless a trip has too many plans to enumerate quickly. Otherwise rounds of: an optimal
    assignment of the riders left to the seats left (riders taking the smallest share of a
    trip's detour first), then each trip's riders inserted one by one, earliest pickup first
    (one that no longer fits waits for the next round). Up to GREEDY_MAX_PAIRS feasible pairs
    the greedy insertion heuristic with repairs runs too, and the better answer wins; up to
    REPAIR_MAX_PAIRS the rounds' answer gets the greedy heuristic's repairs (a bounded number).
    excluded: (trip, rider) pairs never to propose (declined before)."""
    if max_new_riders_per_trip < 1:
        raise ValueError("max_new_riders_per_trip must be >= 1")
    found = _feasible(
        trips,
        riders,
        router=router,
        limits=limits,
        resolution=resolution,
        max_new=max_new_riders_per_trip,
        excluded=excluded,
    )
    if max_new_riders_per_trip == 1 or len(found.t) > REPAIR_MAX_PAIRS:
        return _assign_in_rounds(trips, riders, found, max_new_riders_per_trip)
    if len(found.t) > GREEDY_MAX_PAIRS:
        pairs = _pairs_of(trips, found)
        rounds = _assign_in_rounds(trips, riders, found, max_new_riders_per_trip)
        return _repaired(
            trips,
            riders,
            pairs,
            found,
            rounds,
            router=router,
            limits=limits,
            max_new=max_new_riders_per_trip,
        )
    pairs = _pairs_of(trips, found)
    if len(pairs) <= exact_max_pairs:
        try:
            return assign_exact(
                trips,
                riders,
                pairs,
                router=router,
                limits=limits,
                max_new_riders_per_trip=max_new_riders_per_trip,
                max_plans_per_trip=_EXACT_MAX_PLANS_PER_TRIP,
            )
        except ValueError:
            pass  # too many plans to enumerate: the heuristics below
    rounds = _assign_in_rounds(trips, riders, found, max_new_riders_per_trip)
    greedy = assign_greedy(
        trips,
        riders,
        pairs,
        router=router,
        limits=limits,
        max_new_riders_per_trip=max_new_riders_per_trip,
    )
    return max(rounds, greedy, key=lambda a: (a.riders_served, a.saved_km))


def matching_bound(
    trips: Sequence[Trip],
    riders: Sequence[Rider],
    *,
    router: Router,
    limits: InsertionLimits,
    resolution: int,
    max_new_riders_per_trip: int,
) -> int:
    """The most riders any assignment can serve if no seat is used twice: a maximum matching
    of riders to seats (a trip's free seats, at least one, at most max_new_riders_per_trip),
    every pair that fits alone considered. An upper bound of propose_matches' count with one
    new rider a trip (which it then reaches); with several, a plan that seats a rider where
    another got off, or a rider that fits only with another aboard, could exceed it."""
    found = _feasible(
        trips,
        riders,
        router=router,
        limits=limits,
        resolution=resolution,
        max_new=1,
        excluded=(),
    )
    if not len(found.t):
        return 0
    # A rider that fits a trip alone fits it: at least one slot, even in a car full somewhere.
    free = np.maximum(1, found.plans.trips.seats - found.plans.load.max(axis=1))
    slots = np.minimum(free, max_new_riders_per_trip)
    edges = _slot_edges(found.t, found.r, slots)
    if not len(edges.pair):
        return 0
    graph = sparse.csr_array(
        (np.ones(len(edges.pair)), (edges.rows, edges.columns)),
        shape=(edges.n_rows, edges.n_columns),
    )
    matched = maximum_bipartite_matching(graph, perm_type="column")
    return int((matched >= 0).sum())


def _assign_in_rounds(
    trips: Sequence[Trip], riders: Sequence[Rider], found: _Feasible, max_new: int
) -> Assignment:
    """Rounds of: an optimal assignment of the riders left to the seats left (each pair judged
    with the plan as it is), then each trip's riders inserted one by one, earliest pickup
    first, each where it fits best by then (or not at all: it waits for the next round)."""
    plans, arrays = found.plans, found.riders
    if not len(found.t):
        return Assignment(proposals=(), plans=tuple(trips))
    big = _big(found.r, found.rider_km[found.r] - found.added_km)
    # Each pair's best insertion into its trip's plan as it is (re-checked when the plan changes).
    fits = np.ones(len(found.t), dtype=np.bool_)
    cost = found.added_km.copy()
    at_i, at_j = found.i.copy(), found.j.copy()
    pickup_eta, dropoff_eta = found.pickup_eta_s.copy(), found.dropoff_eta_s.copy()
    stale = np.zeros(len(trips), dtype=np.bool_)
    served = np.zeros(len(riders), dtype=np.bool_)
    added_km: dict[int, float] = {}
    for _ in range(1 + _REPAIR_ROUNDS if max_new > 1 else 1):
        room = max_new - plans.new_riders
        again = np.flatnonzero(~served[found.r] & (room[found.t] > 0) & stale[found.t])
        if len(again):
            result = best_insertions(
                plans,
                arrays,
                found.t[again],
                found.r[again],
                heading_ok=np.ones(len(again), dtype=np.bool_),
            )
            fits[again], cost[again] = result.fits, result.added_km
            at_i[again], at_j[again] = result.i, result.j
            pickup_eta[again], dropoff_eta[again] = result.pickup_eta_s, result.dropoff_eta_s
        open_ = np.flatnonzero(fits & ~served[found.r] & (room[found.t] > 0))
        if not len(open_):
            break
        seats_left = plans.trips.seats - plans.load.max(axis=1)
        slots = np.minimum(room, np.maximum(1, seats_left))
        # One rider a trip: the exact optimum (riders, then km saved). Several: riders that add
        # the least leave the most room for more (serving more riders comes first).
        if max_new == 1:
            values = big + found.rider_km[found.r[open_]] - cost[open_]
        else:
            # The share of the trip's detour a rider takes (1 km more of slack keeps a trip
            # with no detour at all comparable).
            values = big - cost[open_] / (plans.trips.max_detour_km[found.t[open_]] + 1.0)
        if max_new > 1:
            keep = _best_per_trip(found.t[open_], -values, slots * _RIDERS_PER_SEAT)
            open_, values = open_[keep], values[keep]
        chosen = open_[_match(found.t[open_], found.r[open_], values, slots)]
        order = chosen[np.lexsort((pickup_eta[chosen], found.t[chosen]))]
        trips_of = found.t[order]
        rank = np.arange(len(order)) - np.searchsorted(trips_of, trips_of)
        inserted = 0
        for k in range(int(rank.max()) + 1 if len(rank) else 0):
            pick = order[rank == k]
            t, r = found.t[pick], found.r[pick]
            if k:  # the plan changed since the pair was judged
                result = best_insertions(
                    plans, arrays, t, r, heading_ok=np.ones(len(t), dtype=np.bool_)
                )
                ok = result.fits
                fits[pick], cost[pick] = ok, result.added_km
                at_i[pick], at_j[pick] = result.i, result.j
                pickup_eta[pick], dropoff_eta[pick] = result.pickup_eta_s, result.dropoff_eta_s
            else:
                ok = np.ones(len(pick), dtype=np.bool_)
            pick, t, r = pick[ok], t[ok], r[ok]
            plans.insert(t, r, arrays, at_i[pick], at_j[pick], pickup_eta[pick], dropoff_eta[pick])
            served[r] = True
            added_km.update(zip(r.tolist(), cost[pick].tolist(), strict=True))
            inserted += len(pick)
        stale = np.zeros(len(trips), dtype=np.bool_)
        stale[found.t[order]] = True
        if not inserted:
            break
    return _array_proposals(trips, riders, found, added_km)


def _repaired(
    trips: Sequence[Trip],
    riders: Sequence[Rider],
    pairs: Sequence[Pair],
    found: _Feasible,
    result: Assignment,
    *,
    router: Router,
    limits: InsertionLimits,
    max_new: int,
) -> Assignment:
    """The greedy heuristic's repairs (join, move, two for one) applied to an assignment, with
    at most REPAIR_INSERTIONS insertions tried."""
    plans = list(result.plans)
    by_rider = {p.rider: p for p in result.proposals}
    added: dict[int, list[_Placed]] = {}
    # The order riders joined their trips (plans.trip appended them in that order).
    for r in found.plans.joined:
        proposal = by_rider[r]
        added.setdefault(proposal.trip, []).append((r, proposal.added_km, proposal.rider_km))
    _improve(
        trips,
        riders,
        _options_by_rider(pairs),
        plans,
        added,
        router,
        limits,
        max_new,
        budget=REPAIR_INSERTIONS,
    )
    return _proposals(trips, plans, added, router)


def _array_proposals(
    trips: Sequence[Trip], riders: Sequence[Rider], found: _Feasible, added_km: dict[int, float]
) -> Assignment:
    plans = found.plans
    final = list(trips)
    proposals = []
    for t in np.flatnonzero(plans.new_riders).tolist():
        final[t] = plans.trip(t, trips[t], riders)
        trip_detour = float(plans.route_km[t] - plans.trips.direct_km[t])
        for r, (pickup_s, dropoff_s) in final_etas_s(plans, t).items():
            own_km = float(found.rider_km[r])
            proposals.append(
                Proposal(
                    trip=t,
                    rider=r,
                    pickup_eta_s=pickup_s,
                    dropoff_eta_s=dropoff_s,
                    detour_km=trip_detour,
                    added_km=added_km[r],
                    rider_km=own_km,
                    saved_km=own_km - added_km[r],
                )
            )
    proposals.sort(key=lambda p: p.rider)
    return Assignment(proposals=tuple(proposals), plans=tuple(final))


def _best_per_trip(
    t: NDArray[np.int64], cost: NDArray[np.float64], most: NDArray[np.int64]
) -> NDArray[np.int64]:
    """The positions of each trip's most[t] cheapest pairs."""
    if not len(t):
        return np.empty(0, dtype=np.int64)
    # One sort of a single key (trip, then cost within the trip's span): faster than lexsort.
    low = float(cost.min())
    span = float(cost.max()) - low + 1.0
    order = np.argsort(t * span + (cost - low), kind="stable")
    trips = t[order]
    rank = np.arange(len(order)) - np.searchsorted(trips, trips)
    kept: NDArray[np.int64] = np.sort(order[rank < most[trips]])
    return kept


def _big(r: NDArray[np.int64], saved: NDArray[np.float64]) -> float:
    """A value larger than the widest spread of total savings: one more rider beats any km."""
    widest = np.zeros(int(r.max()) + 1 if len(r) else 0)
    np.maximum.at(widest, r, np.abs(saved))
    return 1.0 + 2.0 * float(widest.sum())


class _Edges(msgspec.Struct, frozen=True):
    """Each pair's edges to the seats (slots) of its trip, as (row, column) of a bipartite graph:
    rows are the riders with a pair, columns the slots of the trips with a pair."""

    rows: NDArray[np.int64]
    columns: NDArray[np.int64]
    pair: NDArray[np.int64]
    n_rows: int
    n_columns: int


def _slot_edges(t: NDArray[np.int64], r: NDArray[np.int64], slots: NDArray[np.int64]) -> _Edges:
    present = np.zeros(int(r.max()) + 1 if len(r) else 0, dtype=np.bool_)
    present[r] = True
    row_of = np.cumsum(present) - 1
    wanted = np.zeros(len(slots), dtype=np.bool_)
    wanted[t] = True
    used = np.where(wanted, np.maximum(slots, 0), 0)
    first = np.cumsum(used) - used
    per_pair = used[t]
    pair = np.repeat(np.arange(len(t)), per_pair)
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
    return _Edges(
        row_of[r][pair], first[t][pair] + offset, pair, int(present.sum()), int(used.sum())
    )


def _match(
    t: NDArray[np.int64],
    r: NDArray[np.int64],
    values: NDArray[np.float64],
    slots: NDArray[np.int64],
) -> NDArray[np.int64]:
    """The pairs (positions) of a maximum-value assignment of riders to trip seats (slots[t] a
    trip, each rider at most once): a linear assignment of each connected part of the graph
    (`_assign_parts`)."""
    edges = _slot_edges(t, r, slots)
    rows, columns, pair = edges.rows, edges.columns, edges.pair
    if not len(pair):
        return np.empty(0, dtype=np.int64)
    matched_rows, matched_columns = _assign_parts(
        rows, columns, values[pair], edges.n_rows, edges.n_columns
    )
    # Back from (row, column) to the pair: the edges whose row got that column.
    column_of_row = np.full(edges.n_rows, -1, dtype=np.int64)
    column_of_row[matched_rows] = matched_columns
    chosen: NDArray[np.int64] = pair[column_of_row[rows] == columns]
    return chosen


#: A graph whose largest connected part holds less than this share of its vertices is solved
#: part by part: the sparse solver's work grows faster than its size (intercity batches, a few
#: corridors: 1.20 -> 0.77 s for one 4,000 x 20,000 assignment, the same answer).
_SPLIT_BELOW_SHARE = 0.9


def _assign_parts(
    rows: NDArray[np.int64],
    columns: NDArray[np.int64],
    edge_values: NDArray[np.float64],
    n_rows: int,
    n_columns: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The matched (rows, columns) of a maximum-value assignment over these edges, solved for
    each connected part of the bipartite graph on its own when no part dominates it."""
    n = n_rows + n_columns
    graph = sparse.csr_array((np.ones(len(rows)), (rows, columns + n_rows)), shape=(n, n))
    parts, label = connected_components(graph, directed=False)
    if parts == 1 or np.bincount(label).max() >= _SPLIT_BELOW_SHARE * n:
        return _assign(rows, columns, edge_values, n_rows, n_columns)
    # Each vertex's index within its part, each part's vertices and edges in a span of its own.
    row_part, column_part = label[:n_rows], label[n_rows:]
    row_order, column_order = (
        np.argsort(row_part, kind="stable"),
        np.argsort(column_part, kind="stable"),
    )
    row_start = np.searchsorted(row_part[row_order], np.arange(parts + 1))
    column_start = np.searchsorted(column_part[column_order], np.arange(parts + 1))
    local_row = np.empty(n_rows, dtype=np.int64)
    local_row[row_order] = np.arange(n_rows) - row_start[row_part[row_order]]
    local_column = np.empty(n_columns, dtype=np.int64)
    local_column[column_order] = np.arange(n_columns) - column_start[column_part[column_order]]
    edge_part = row_part[rows]
    edge_order = np.argsort(edge_part, kind="stable")
    edge_start = np.searchsorted(edge_part[edge_order], np.arange(parts + 1))

    def solve(part: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        edges = edge_order[edge_start[part] : edge_start[part + 1]]
        part_rows, part_columns = _assign(
            local_row[rows[edges]],
            local_column[columns[edges]],
            edge_values[edges],
            int(row_start[part + 1] - row_start[part]),
            int(column_start[part + 1] - column_start[part]),
        )
        matched_rows = row_order[row_start[part] + part_rows]
        return matched_rows, column_order[column_start[part] + part_columns]

    def solve_all(group: list[int]) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
        return [solve(part) for part in group]

    # The parts with edges (a lone vertex has nothing to solve), in groups of about equal edges,
    # a few a thread (many tiny parts cost more as tasks than as solves); the dense solver
    # runs without the GIL.
    sizes = np.diff(edge_start)
    with_edges = np.flatnonzero(sizes)
    ends = np.cumsum(sizes[with_edges])
    groups = max(1, min(len(with_edges), 2 * threads.WORKERS))
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, groups) / groups, side="right")
    groups_of_parts = [g.tolist() for g in np.split(with_edges, cuts) if len(g)]
    solved = [one for group in threads.map_chunks(solve_all, groups_of_parts) for one in group]
    return np.concatenate([r for r, _ in solved]), np.concatenate([c for _, c in solved])


def _assign(
    rows: NDArray[np.int64],
    columns: NDArray[np.int64],
    edge_values: NDArray[np.float64],
    n_rows: int,
    n_columns: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The matched (rows, columns) of a maximum-value assignment over these edges (each row and
    each column at most once, any of them left unmatched): dense or sparse by size."""
    if n_rows * n_columns <= _DENSE_MAX_CELLS:
        cost = np.zeros((n_rows, n_columns))
        cost[rows, columns] = -edge_values
        matched_rows, matched_columns = linear_sum_assignment(cost)
        return matched_rows.astype(np.int64), matched_columns.astype(np.int64)
    # The sparse solver (LAPJVsp) matches every vertex of one side: the smaller one, which it
    # augments one vertex at a time (seats when fewer than riders: much faster). Each vertex of
    # that side also gets a column of its own (left unmatched), so a full matching exists;
    # weights shifted positive (the solver takes a zero for no edge).
    ceiling = float(edge_values.max()) + 1.0
    if n_columns < n_rows:
        side, other, n_side, n_other = columns, rows, n_columns, n_rows
    else:
        side, other, n_side, n_other = rows, columns, n_rows, n_columns
    graph = sparse.csr_array(
        (
            np.concatenate([ceiling - edge_values, np.full(n_side, ceiling)]),
            (
                np.concatenate([side, np.arange(n_side)]),
                np.concatenate([other, n_other + np.arange(n_side)]),
            ),
        ),
        shape=(n_side, n_other + n_side),
    )
    matched_side, matched_other = min_weight_full_bipartite_matching(graph)
    real = matched_other < n_other
    matched_side, matched_other = matched_side[real], matched_other[real]
    if n_columns < n_rows:
        return matched_other, matched_side
    return matched_side, matched_other


def measure_gap(
    batches: Iterable[Batch],
    *,
    router: Router,
    limits: InsertionLimits,
    resolution: int,
    max_new_riders_per_trip: int,
) -> Gap:
    """How far the greedy heuristic falls short of the exact answer on these batches.

    With several new riders per trip the exact answer enumerates plans (`assign_exact`): keep
    such batches small (a few dozen trips)."""
    count = riders_total = bound_served = exact_served = heuristic_served = 0
    exact_saved = heuristic_saved = 0.0
    worst = 1.0
    for batch in batches:
        trips, riders = batch.trips, batch.riders
        pairs = feasible_pairs(trips, riders, router=router, limits=limits, resolution=resolution)
        bound = solve_pairwise(
            trips, riders, pairs, max_new_riders_per_trip=max_new_riders_per_trip
        )
        if max_new_riders_per_trip == 1:
            exact_count, exact_km = len(bound), sum(p.saved_km for p in bound)
        else:
            exact = assign_exact(
                trips,
                riders,
                pairs,
                router=router,
                limits=limits,
                max_new_riders_per_trip=max_new_riders_per_trip,
            )
            exact_count, exact_km = exact.riders_served, exact.saved_km
        heuristic = assign_greedy(
            trips,
            riders,
            pairs,
            router=router,
            limits=limits,
            max_new_riders_per_trip=max_new_riders_per_trip,
        )
        count += 1
        riders_total += len(riders)
        bound_served += len(bound)
        exact_served += exact_count
        heuristic_served += heuristic.riders_served
        exact_saved += exact_km
        heuristic_saved += heuristic.saved_km
        if exact_count:
            worst = min(worst, heuristic.riders_served / exact_count)
    return Gap(
        batches=count,
        riders=riders_total,
        bound_served=bound_served,
        exact_served=exact_served,
        heuristic_served=heuristic_served,
        exact_saved_km=exact_saved,
        heuristic_saved_km=heuristic_saved,
        worst_served_share=worst,
    )


def _check_batch(trips: Sequence[Trip], riders: Sequence[Rider]) -> None:
    if len(trips) > MAX_BATCH_TRIPS or len(riders) > MAX_BATCH_RIDERS:
        raise ValueError(
            f"a batch has at most {MAX_BATCH_TRIPS} trips and {MAX_BATCH_RIDERS} riders"
        )


def _most_constrained_first(chosen: Iterable[int], options: dict[int, list[Pair]]) -> list[int]:
    """Riders with the fewest feasible trips first; then the one saving the most."""
    return sorted(chosen, key=lambda r: (len(options[r]), -max(p.saved_km for p in options[r]), r))


def _options_by_rider(pairs: Sequence[Pair]) -> dict[int, list[Pair]]:
    options: dict[int, list[Pair]] = {}
    for pair in pairs:
        options.setdefault(pair.rider, []).append(pair)
    return options


def _improve(
    trips: Sequence[Trip],
    riders: Sequence[Rider],
    pair_options: dict[int, list[Pair]],
    plans: list[Trip],
    added: dict[int, list[_Placed]],
    router: Router,
    limits: InsertionLimits,
    max_new: int,
    budget: int | None = None,
) -> None:
    """Serve more riders by small repairs of the plans (in place), for each rider left out:
    - join: rebuild one of its trips with it, the trip's riders inserted in another order;
    - move: take one rider v out of the trip for it, v going to another trip that fits v;
    - two for one: take v out for it and another rider left out (v is then left out).
    Each repair serves one more rider; sweeps stop when one finds none."""
    repair = _Repair(trips, riders, pair_options, plans, added, router, limits, max_new)
    if budget is not None:
        repair.budget = min(repair.budget, budget)
    for _ in range(_IMPROVEMENT_PASSES):
        changed = False
        for u in _most_constrained_first(repair.options, repair.options):
            if repair.budget <= 0:
                return
            if u not in repair.placed and repair.serve(u):
                changed = True
        if not changed:
            return


class _Repair:
    """The state _improve works on: the plans, who rides where, and how to rebuild a trip."""

    def __init__(
        self,
        trips: Sequence[Trip],
        riders: Sequence[Rider],
        pair_options: dict[int, list[Pair]],
        plans: list[Trip],
        added: dict[int, list[_Placed]],
        router: Router,
        limits: InsertionLimits,
        max_new: int,
    ) -> None:
        self.trips, self.riders, self.plans, self.added = trips, riders, plans, added
        self.router, self.limits, self.max_new = router, limits, max_new
        self.options = {r: sorted(o, key=lambda p: -p.saved_km) for r, o in pair_options.items()}
        self.own_km = {p.rider: p.rider_km for o in self.options.values() for p in o}
        self.placed = {r for new in added.values() for r, *_ in new}
        #: Insertions the repairs may still try: their work stays proportional to the batch's.
        self.budget = _REPAIR_INSERTIONS_PER_PAIR * sum(len(o) for o in self.options.values())
        self.wanting: dict[int, list[int]] = {}
        for r in _most_constrained_first(self.options, self.options):
            for pair in self.options[r]:
                self.wanting.setdefault(pair.trip, []).append(r)

    def members(self, t: int) -> list[int]:
        return [r for r, *_ in self.added.get(t, [])]

    def build(self, t: int, members: Sequence[int]) -> tuple[Trip, list[_Placed]] | None:
        """The trip with these riders, in the first of a few insertion orders that fits: as
        given, the last ones first, by earliest pickup."""
        orders = [
            list(members),
            [*members[-2:], *members[:-2]],
            sorted(members, key=lambda r: (self.riders[r].earliest_pickup_s, r)),
        ]
        for i, order in enumerate(orders):
            if order in orders[:i]:
                continue
            plan, placed_in = self.trips[t], []
            for r in order:
                self.budget -= 1
                insertion = best_insertion(
                    plan, self.riders[r], router=self.router, limits=self.limits
                )
                if insertion is None:
                    break
                plan = with_rider(plan, self.riders[r], insertion)
                placed_in.append((r, insertion.added_km, self.own_km[r]))
            else:
                return plan, placed_in
        return None

    def commit(self, t: int, built: tuple[Trip, list[_Placed]]) -> None:
        self.placed.difference_update(self.members(t))
        self.plans[t], self.added[t] = built
        self.placed.update(r for r, *_ in built[1])

    def serve(self, u: int) -> bool:
        """Whether a join, a move or a two-for-one found room for u (and was made)."""
        for pair in self.options[u]:
            t = pair.trip
            members = self.members(t)
            if members and len(members) < self.max_new:
                built = self.build(t, [*members, u])
                if built is not None:
                    self.commit(t, built)
                    return True
            for v in members:
                rest = [r for r in members if r != v]
                built = self.build(t, [*rest, u])
                if built is not None and self._move_elsewhere(v, t, built):
                    return True
                if len(rest) + 2 <= self.max_new and self._two_for_one(t, u, rest):
                    return True
        return False

    def _move_elsewhere(self, v: int, t: int, built: tuple[Trip, list[_Placed]]) -> bool:
        for other in self.options[v]:
            t2 = other.trip
            if t2 == t or len(self.added.get(t2, [])) >= self.max_new:
                continue
            insertion = best_insertion(
                self.plans[t2], self.riders[v], router=self.router, limits=self.limits
            )
            if insertion is None:
                continue
            self.commit(t, built)
            self.plans[t2] = with_rider(self.plans[t2], self.riders[v], insertion)
            self.added.setdefault(t2, []).append((v, insertion.added_km, other.rider_km))
            self.placed.add(v)
            return True
        return False

    def _two_for_one(self, t: int, u: int, rest: list[int]) -> bool:
        left_out = [w for w in self.wanting.get(t, []) if w != u and w not in self.placed]
        for w in left_out[:_MAX_PARTNERS]:
            built = self.build(t, [*rest, u, w])
            if built is not None:
                self.commit(t, built)
                return True
        return False


def _proposals(
    trips: Sequence[Trip],
    plans: Sequence[Trip],
    added: dict[int, list[_Placed]],
    router: Router,
) -> Assignment:
    """The proposals of the new riders of each plan: ETAs and detour from the final plan."""
    proposals = []
    for t, new in added.items():
        plan = plans[t]
        etas = rider_etas_s(plan, router)
        trip_detour = detour_km(plan, router)
        first_new = len(trips[t].riders)
        for offset, (r, added_km, own_km) in enumerate(new):
            pickup_s, dropoff_s = etas[first_new + offset]
            proposals.append(
                Proposal(
                    trip=t,
                    rider=r,
                    pickup_eta_s=pickup_s,
                    dropoff_eta_s=dropoff_s,
                    detour_km=trip_detour,
                    added_km=added_km,
                    rider_km=own_km,
                    saved_km=own_km - added_km,
                )
            )
    proposals.sort(key=lambda p: p.rider)
    return Assignment(proposals=tuple(proposals), plans=tuple(plans))


def _lexicographic_values(pairs: Sequence[Pair]) -> NDArray[np.float64]:
    """A value per pair such that serving one more rider always beats any distance saved.

    value = big + saved_km, with big larger than the widest possible spread of total savings."""
    saved = np.array([p.saved_km for p in pairs], dtype=np.float64)
    widest: dict[int, float] = {}
    for pair, value in zip(pairs, np.abs(saved).tolist(), strict=True):
        widest[pair.rider] = max(widest.get(pair.rider, 0.0), value)
    big = 1.0 + 2.0 * sum(widest.values())
    return big + saved


def _solve_assignment(
    pairs: Sequence[Pair], values: NDArray[np.float64], max_new: int
) -> list[int]:
    """A linear assignment of riders (rows) to rider slots (max_new columns per trip)."""
    rows = {r: i for i, r in enumerate(sorted({p.rider for p in pairs}))}
    by_trip: dict[int, int] = {}
    for pair in pairs:
        by_trip[pair.trip] = by_trip.get(pair.trip, 0) + 1
    first_column: dict[int, int] = {}
    slots: dict[int, int] = {}
    columns = 0
    for t in sorted(by_trip):
        first_column[t] = columns
        slots[t] = min(max_new, by_trip[t])
        columns += slots[t]
    # Edges: each pair to each slot of its trip; remember which pair an edge stands for.
    edge_rows, edge_columns, edge_pairs = [], [], []
    for i, pair in enumerate(pairs):
        for slot in range(slots[pair.trip]):
            edge_rows.append(rows[pair.rider])
            edge_columns.append(first_column[pair.trip] + slot)
            edge_pairs.append(i)
    edge_values = values[np.array(edge_pairs, dtype=np.intp)]
    pair_of_edge = {(a, b): i for a, b, i in zip(edge_rows, edge_columns, edge_pairs, strict=True)}
    matched_rows, matched_columns = _assign(
        np.array(edge_rows, dtype=np.int64),
        np.array(edge_columns, dtype=np.int64),
        edge_values,
        len(rows),
        columns,
    )
    return [
        pair_of_edge[key]
        for key in zip(matched_rows.tolist(), matched_columns.tolist(), strict=True)
        if key in pair_of_edge
    ]

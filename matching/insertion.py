"""`best_insertion` for many (trip, rider) pairs at once, with numpy, and plans kept as arrays.

The rules and the choice are those of `feasibility.best_insertion` (seats on every leg, the
rider's window, the detour, every rider aboard within their promise plus the delay limit and
their own window, the heading), computed the same way: the same legs from the router (its bulk
`measure_legs`), the same sums in the same order, so the answers agree up to the last bits of
the router's arithmetic (tests check them on random batches). For each pair the scalar code
tries every (pickup, drop-off) position; here each position is one array operation over all the
pairs whose trip has the same number of stops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from matching.corridor import RiderArrays, TripArrays
from matching.feasibility import (
    InsertionLimits,
    Rider,
    Stop,
    StopKind,
    Trip,
    plan_points,
)
from matching.geometry import unit_vectors
from matching.routing import Router, chord_measure, is_symmetric, measure_legs
from matching.threads import map_chunks

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]
#: Points as the router measures them, one array a coordinate (Plans.columns).
Columns = list[Floats]

#: Rounding slack on the detour and window comparisons (km, s), as in feasibility.
_EPSILON = 1e-9
#: Pairs are evaluated this many at a time (their arrays then stay in the processor's cache).
_PAIRS_PER_CHUNK = 32_768


class Plans:
    """Each trip's plan as rows of arrays, points 0..n+1 (origin, the n stops, destination):
    where each point is, when the driver reaches it, the latest it may be reached (a rider's
    promise plus the delay limit, their window's end for a pickup), the leg from it to the next
    (km, s) and the seats taken on that leg. Riders already in a trip are -1 - their position;
    riders of the batch are their batch position."""

    def __init__(
        self,
        trips: Sequence[Trip],
        arrays: TripArrays,
        *,
        router: Router,
        limits: InsertionLimits,
        max_new_riders: int,
    ) -> None:
        n_trips = len(trips)
        most = max((len(t.stops) for t in trips), default=0) + 2 * max_new_riders
        width = most + 2
        self.width = width
        self.trips = arrays
        self.limits = limits
        self.router = router
        self.n = np.zeros(n_trips, dtype=np.int64)
        self.lats = np.zeros((n_trips, width))
        self.lons = np.zeros((n_trips, width))
        self.latest = np.full((n_trips, width), math.inf)
        self.seats_change = np.zeros((n_trips, width), dtype=np.int64)
        self.rider = np.zeros((n_trips, width), dtype=np.int64)
        self.pickup = np.zeros((n_trips, width), dtype=np.bool_)
        self.new_riders = np.zeros(n_trips, dtype=np.int64)
        self.promised: dict[int, tuple[float, float]] = {}
        #: The order batch riders joined their trips.
        self.joined: dict[int, int] = {}
        self._own_legs: tuple[Floats, Floats] | None = None
        self._own_legs_of: RiderArrays | None = None
        self._rider_columns: tuple[Columns, Columns] | None = None
        self._rider_columns_of: RiderArrays | None = None
        #: A router on the sphere measures between unit vectors: the points are converted once
        #: (their columns x, y, z), not at every leg.
        self.chords = chord_measure(router)
        self.lats[:, 0], self.lons[:, 0] = arrays.origin_lats, arrays.origin_lons
        self.lats[:, 1:] = arrays.destination_lats[:, None]
        self.lons[:, 1:] = arrays.destination_lons[:, None]
        for t, trip in enumerate(trips):
            if not trip.stops:
                continue
            points = plan_points(trip)
            self.n[t] = len(trip.stops)
            for k, (point, stop) in enumerate(zip(points[1:-1], trip.stops, strict=True), 1):
                own = trip.riders[stop.rider]
                promised_pickup_s, promised_dropoff_s = trip.promised_etas_s[stop.rider]
                self.lats[t, k], self.lons[t, k] = point.lat, point.lon
                self.rider[t, k] = -1 - stop.rider
                self.pickup[t, k] = stop.kind == StopKind.PICKUP
                if stop.kind == StopKind.PICKUP:
                    self.seats_change[t, k] = own.seats
                    self.latest[t, k] = min(
                        own.latest_pickup_s, promised_pickup_s + limits.max_added_delay_s
                    )
                else:
                    self.seats_change[t, k] = -own.seats
                    self.latest[t, k] = promised_dropoff_s + limits.max_added_delay_s
        if self.chords is not None:
            self.xs, self.ys, self.zs = unit_vectors(self.lats, self.lons)
        self.leg_km = np.zeros((n_trips, width))
        self.leg_s = np.zeros((n_trips, width))
        self.arrival = np.zeros((n_trips, width))
        self.load = np.zeros((n_trips, width), dtype=np.int64)
        self.route_km = np.zeros(n_trips)
        self._measure(np.arange(n_trips, dtype=np.int64))

    @property
    def columns(self) -> Columns:
        """The plans' points as the router measures them: x, y, z or latitude, longitude."""
        return [self.xs, self.ys, self.zs] if self.chords is not None else [self.lats, self.lons]

    def rider_columns(self, riders: RiderArrays) -> tuple[Columns, Columns]:
        """The riders' pickups and drop-offs as `columns` has the plans' points, made once."""
        if self._rider_columns is None or self._rider_columns_of is not riders:
            self._rider_columns_of = riders
            pickups = [riders.pickup_lats, riders.pickup_lons]
            dropoffs = [riders.dropoff_lats, riders.dropoff_lons]
            if self.chords is not None:
                pickups = list(unit_vectors(*pickups))
                dropoffs = list(unit_vectors(*dropoffs))
            self._rider_columns = pickups, dropoffs
        return self._rider_columns

    def legs(self, a: Columns, b: Columns) -> tuple[Floats, Floats]:
        """Road km and seconds from the points a to the points b (as `columns` has them)."""
        if self.chords is not None:
            return self.chords((a[0], a[1], a[2]), (b[0], b[1], b[2]))
        return measure_legs(self.router, a[0], a[1], b[0], b[1])

    def own_legs(self, riders: RiderArrays) -> tuple[Floats, Floats]:
        """Each rider's own leg, pickup to drop-off (km, s), measured once."""
        if self._own_legs is None or self._own_legs_of is not riders:
            self._own_legs_of = riders
            self._own_legs = self.legs(*self.rider_columns(riders))
        return self._own_legs

    def _measure(self, t: Ints) -> None:
        """Legs, arrival times, loads and route length of these trips from their points."""
        if not len(t):
            return
        n = self.n[t]
        rows, ks = np.nonzero(np.arange(self.width - 1)[None, :] <= n[:, None])
        trip_rows = t[rows]
        columns = self.columns
        km, seconds = self.legs(
            [c[trip_rows, ks] for c in columns], [c[trip_rows, ks + 1] for c in columns]
        )
        leg_km = np.zeros((len(t), self.width))
        leg_s = np.zeros((len(t), self.width))
        leg_km[rows, ks], leg_s[rows, ks] = km, seconds
        self.leg_km[t], self.leg_s[t] = leg_km, leg_s
        # Left to right, one addition a leg, as the scalar code sums them.
        starts = np.column_stack([self.trips.departure_s[t], leg_s[:, :-1]])
        self.arrival[t] = np.cumsum(starts, axis=1)
        self.route_km[t] = np.cumsum(leg_km, axis=1)[:, -1]
        self.load[t] = np.cumsum(self.seats_change[t], axis=1)

    def insert(
        self,
        t: Ints,
        r: Ints,
        riders: RiderArrays,
        i: Ints,
        j: Ints,
        pickup_eta_s: Floats,
        dropoff_eta_s: Floats,
    ) -> None:
        """Put each rider r into its trip t (distinct trips) after points i (pickup) and j
        (drop-off), promising it the given ETAs."""
        if not len(t):
            return
        k = np.arange(self.width)[None, :]
        i, j = i[:, None], j[:, None]
        # Where each new point comes from: an old point, or -1 (the pickup), -2 (the drop-off).
        source = np.where(
            k <= i,
            k,
            np.where(k == i + 1, -1, np.where(k <= j + 1, k - 1, np.where(k == j + 2, -2, k - 2))),
        )
        source = np.minimum(source, self.width - 1)
        old = np.maximum(source, 0)
        is_pickup, is_dropoff = source == -1, source == -2
        delay = self.limits.max_added_delay_s
        changes: list[tuple[str, NDArray[Any], NDArray[Any]]] = [
            ("lats", riders.pickup_lats[r], riders.dropoff_lats[r]),
            ("lons", riders.pickup_lons[r], riders.dropoff_lons[r]),
            (
                "latest",
                np.minimum(riders.latest_s[r], pickup_eta_s + delay),
                dropoff_eta_s + delay,
            ),
            ("seats_change", riders.seats[r], -riders.seats[r]),
            ("rider", r, r),
            ("pickup", np.ones(len(t), dtype=np.bool_), np.zeros(len(t), dtype=np.bool_)),
        ]
        if self.chords is not None:
            pickups, dropoffs = self.rider_columns(riders)
            changes += [
                (name, pickup[r], dropoff[r])
                for name, pickup, dropoff in zip(("xs", "ys", "zs"), pickups, dropoffs, strict=True)
            ]
        for name, pickup_value, dropoff_value in changes:
            table = getattr(self, name)
            rows = np.take_along_axis(table[t], old, axis=1)
            rows = np.where(is_pickup, pickup_value[:, None], rows)
            rows = np.where(is_dropoff, dropoff_value[:, None], rows)
            table[t] = rows
        self.n[t] += 2
        self.new_riders[t] += 1
        for rider, pickup_s, dropoff_s in zip(
            r.tolist(), pickup_eta_s.tolist(), dropoff_eta_s.tolist(), strict=True
        ):
            self.promised[rider] = (pickup_s, dropoff_s)
            self.joined[rider] = len(self.joined)
        self._measure(t)

    def trip(self, t: int, original: Trip, riders: Sequence[Rider]) -> Trip:
        """The trip with its plan as it is now (new riders appended in the order they joined)."""
        n = int(self.n[t])
        if n == len(original.stops):
            return original
        new = [
            r
            for r, p in zip(
                self.rider[t, 1 : n + 1].tolist(), self.pickup[t, 1 : n + 1].tolist(), strict=True
            )
            if p and r >= 0
        ]
        order = sorted(new, key=self.joined.__getitem__)
        position = {r: len(original.riders) + k for k, r in enumerate(order)}
        stops = []
        for rider, pickup in zip(
            self.rider[t, 1 : n + 1].tolist(), self.pickup[t, 1 : n + 1].tolist(), strict=True
        ):
            kind = StopKind.PICKUP if pickup else StopKind.DROPOFF
            stops.append(Stop(-1 - rider if rider < 0 else position[rider], kind))
        return msgspec.structs.replace(
            original,
            riders=(*original.riders, *(riders[r] for r in order)),
            stops=tuple(stops),
            promised_etas_s=(*original.promised_etas_s, *(self.promised[r] for r in order)),
        )


class Insertions(msgspec.Struct, frozen=True):
    """For each pair: whether the rider fits, and if so the best insertion (points i and j of
    the plan the pickup and drop-off follow; the route's length with the rider; the ETAs)."""

    fits: Bools
    i: Ints
    j: Ints
    route_km: Floats
    added_km: Floats
    pickup_eta_s: Floats
    dropoff_eta_s: Floats


def heading_fits(
    trips: TripArrays, riders: RiderArrays, t: Ints, r: Ints, max_heading_diff_deg: float
) -> Bools:
    """feasibility.heading_fits for many pairs."""
    driver = bearings_deg(
        trips.origin_lats, trips.origin_lons, trips.destination_lats, trips.destination_lons
    )
    own = bearings_deg(
        riders.pickup_lats, riders.pickup_lons, riders.dropoff_lats, riders.dropoff_lons
    )
    difference = np.abs(driver[t] - own[r]) % 360.0
    angle = np.minimum(difference, 360.0 - difference)
    still_trip = (trips.origin_lats == trips.destination_lats) & (
        trips.origin_lons == trips.destination_lons
    )
    still_ride = (riders.pickup_lats == riders.dropoff_lats) & (
        riders.pickup_lons == riders.dropoff_lons
    )
    fits: Bools = still_trip[t] | still_ride[r] | (angle <= max_heading_diff_deg)
    return fits


def bearings_deg(lats1: Floats, lons1: Floats, lats2: Floats, lons2: Floats) -> Floats:
    """geometry.bearing_deg, element-wise."""
    phi1, phi2 = np.radians(lats1), np.radians(lats2)
    dlam = np.radians(lons2 - lons1)
    y = np.sin(dlam) * np.cos(phi2)
    x = np.cos(phi1) * np.sin(phi2) - np.sin(phi1) * np.cos(phi2) * np.cos(dlam)
    bearing = np.degrees(np.arctan2(y, x)) % 360.0
    bearing = np.where(bearing == 360.0, 0.0, bearing)
    result: Floats = np.where((x == 0.0) & (y == 0.0), 0.0, bearing)
    return result


def best_insertions(
    plans: Plans, riders: RiderArrays, t: Ints, r: Ints, *, heading_ok: Bools
) -> Insertions:
    """`best_insertion` of rider r[k] into the plan of trip t[k], for every k."""
    count = len(t)
    result = Insertions(
        np.zeros(count, dtype=np.bool_),
        np.zeros(count, dtype=np.int64),
        np.zeros(count, dtype=np.int64),
        np.full(count, math.inf),
        np.full(count, math.inf),
        np.full(count, math.inf),
        np.full(count, math.inf),
    )
    # Each rider's own leg, once (all riders: cheaper than finding the ones asked about).
    own_km, own_s = plans.own_legs(riders)
    n_of = plans.n[t]
    chunks = []
    for n in np.unique(n_of).tolist():
        group = np.flatnonzero(n_of == n)
        chunks += [
            (n, group[k : k + _PAIRS_PER_CHUNK]) for k in range(0, len(group), _PAIRS_PER_CHUNK)
        ]

    def evaluate(chunk: tuple[int, Ints]) -> None:  # each chunk writes its own positions
        n, part = chunk
        _evaluate(
            plans,
            riders,
            t[part],
            r[part],
            (own_km[r[part]], own_s[r[part]]),
            heading_ok[part],
            n,
            result,
            part,
        )

    map_chunks(evaluate, chunks)
    return result


def _evaluate(
    plans: Plans,
    riders: RiderArrays,
    t: Ints,
    r: Ints,
    own_leg: tuple[Floats, Floats],
    heading_ok: Bools,
    n: int,
    out: Insertions,
    where: Ints,
) -> None:
    """best_insertions for pairs whose trips all have n stops; results into out[where]."""
    pickups, dropoffs = plans.rider_columns(riders)
    p, q = [c[r] for c in pickups], [c[r] for c in dropoffs]
    points = [c[t] for c in plans.columns]

    def at(k: int) -> Columns:
        return [c[:, k] for c in points]

    legs = plans.legs
    # Legs from each point of the plan to the pickup and from the pickup to the next point; the
    # same for the drop-off. A symmetric router answers each pair of points once.
    to_p = [legs(at(k), p) for k in range(n + 1)]
    to_q = [legs(at(k), q) if k else None for k in range(n + 1)]
    if is_symmetric(plans.router):
        p_to = to_p[1:]
        q_to: list[tuple[Floats, Floats]] = [leg for leg in to_q[1:] if leg is not None] + [
            legs(q, at(n + 1))
        ]
    else:
        p_to = [legs(p, at(k + 1)) for k in range(n)]
        q_to = [legs(q, at(k + 1)) for k in range(n + 1)]
    pq_km, pq_s = own_leg
    leg_km, arrival, latest, load = (
        plans.leg_km[t],
        plans.arrival[t],
        plans.latest[t],
        plans.load[t],
    )
    current = plans.route_km[t]
    budget = plans.trips.direct_km[t] + plans.trips.max_detour_km[t] + _EPSILON
    seats = riders.seats[r]
    room = plans.trips.seats[t] - seats
    earliest, latest_pickup = riders.earliest_s[r], riders.latest_s[r]
    fits = heading_ok & (room >= 0)
    best_km = np.full(len(t), math.inf)
    best_eta = np.full(len(t), math.inf)
    best_i = np.zeros(len(t), dtype=np.int64)
    best_j = np.zeros(len(t), dtype=np.int64)
    best_dropoff = np.full(len(t), math.inf)
    for i in range(n + 1):
        pickup_eta = arrival[:, i] + to_p[i][1]
        open_ = (
            fits
            & (load[:, i] <= room)
            & (earliest - _EPSILON <= pickup_eta)
            & (pickup_eta <= latest_pickup + _EPSILON)
        )
        if not open_.any():
            continue
        for j in range(i, n + 1):
            open_ = open_ & (load[:, j] <= room)
            if not open_.any():
                break
            if i == j:
                added = to_p[i][0] + pq_km + q_to[i][0] - leg_km[:, i]
                total = current + added
                dropoff_eta = pickup_eta + pq_s
                shift_mid = np.zeros(len(t))
                shift_after = dropoff_eta + q_to[i][1] - arrival[:, i + 1]
            else:
                into_q = to_q[j]
                assert into_q is not None
                total = (
                    current
                    - leg_km[:, i]
                    - leg_km[:, j]
                    + to_p[i][0]
                    + p_to[i][0]
                    + into_q[0]
                    + q_to[j][0]
                )
                shift_mid = pickup_eta + p_to[i][1] - arrival[:, i + 1]
                dropoff_eta = arrival[:, j] + shift_mid + into_q[1]
                shift_after = dropoff_eta + q_to[j][1] - arrival[:, j + 1]
            ok = open_ & (total <= budget)
            for k in range(i + 1, n + 1):
                shift = shift_mid if k <= j else shift_after
                ok &= arrival[:, k] + shift <= latest[:, k] + _EPSILON
            better = ok & ((total < best_km) | ((total == best_km) & (pickup_eta < best_eta)))
            best_km = np.where(better, total, best_km)
            best_eta = np.where(better, pickup_eta, best_eta)
            best_dropoff = np.where(better, dropoff_eta, best_dropoff)
            best_i = np.where(better, i, best_i)
            best_j = np.where(better, j, best_j)
    found = np.isfinite(best_km)
    out.fits[where] = found
    out.i[where] = best_i
    out.j[where] = best_j
    out.route_km[where] = best_km
    out.added_km[where] = best_km - current
    out.pickup_eta_s[where] = best_eta
    out.dropoff_eta_s[where] = best_dropoff


def final_etas_s(plans: Plans, t: int) -> dict[int, tuple[float, float]]:
    """Each batch rider's (pickup ETA, drop-off ETA) in trip t's plan as it is now."""
    n = int(plans.n[t])
    etas: dict[int, list[float]] = {}
    for rider, arrival in zip(
        plans.rider[t, 1 : n + 1].tolist(), plans.arrival[t, 1 : n + 1].tolist(), strict=True
    ):
        if rider >= 0:
            etas.setdefault(rider, []).append(arrival)
    return {r: (a, b) for r, (a, b) in etas.items()}

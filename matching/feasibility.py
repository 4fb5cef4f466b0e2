"""Can a rider join a driver's trip, and where in it? (pure: plain values in, plain values out)

Times are seconds (float) since an epoch the caller picks, the same for every value of one call:
e.g. `datetime.timestamp()`, or seconds since the batch's `now`. Distances are the Router's road
kilometres. A trip's plan is its ordered stops between origin and destination; the driver leaves
the origin at departure_s and drives on without waiting (a driver who passes a pickup before the
rider's earliest_pickup_s does not fit that rider).

A rider fits when, with their pickup and drop-off inserted (pickup first) into the plan:
- the car never carries more than its seats on any leg;
- the rider's pickup ETA is within [earliest_pickup_s, latest_pickup_s];
- the driver's detour (the route's road length minus the direct road distance origin ->
  destination) stays within the trip's max_detour_km;
- no rider already in the plan reaches any of their stops more than max_added_delay_s later than
  the trip promised them (`Trip.promised_etas_s`: their ETAs when they joined, so delays never
  add up past the limit over several insertions), nor is picked up after their latest_pickup_s;
- the rider travels roughly the driver's way: the bearing pickup -> drop-off is within
  max_heading_diff_deg of origin -> destination.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from enum import StrEnum

import msgspec

from matching.geometry import Point, angle_between_deg, bearing_deg
from matching.routing import Router

#: A car seats at most this many riders (TigerBeetle: a limit on everything).
MAX_SEATS = 8
#: Rounding slack on the detour and window comparisons (km, s): a plan exactly on a limit fits.
_EPSILON = 1e-9


class Rider(msgspec.Struct, frozen=True, kw_only=True):
    """A ride request as matching sees it: where, how many seats, when to be picked up."""

    pickup: Point
    dropoff: Point
    seats: int
    earliest_pickup_s: float
    latest_pickup_s: float

    def __post_init__(self) -> None:
        if not 1 <= self.seats <= MAX_SEATS:
            raise ValueError(f"a rider asks for 1..{MAX_SEATS} seats")
        if not (
            math.isfinite(self.earliest_pickup_s)
            and math.isfinite(self.latest_pickup_s)
            and self.earliest_pickup_s <= self.latest_pickup_s
        ):
            raise ValueError("the pickup window must be finite with earliest <= latest")


class StopKind(StrEnum):
    PICKUP = "pickup"
    DROPOFF = "dropoff"


class Stop(msgspec.Struct, frozen=True):
    """A stop of a plan: rider is a position in the trip's riders."""

    rider: int
    kind: StopKind


class Trip(msgspec.Struct, frozen=True, kw_only=True):
    """A ride offer, the riders already in it and its plan (each rider's pickup, then drop-off)."""

    origin: Point
    destination: Point
    departure_s: float
    seats: int
    max_detour_km: float
    riders: tuple[Rider, ...] = ()
    stops: tuple[Stop, ...] = ()
    #: For each rider (by position): the (pickup, drop-off) ETAs the rider was promised, the
    #: reference their delays are measured from.
    promised_etas_s: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.seats <= MAX_SEATS:
            raise ValueError(f"a trip offers 1..{MAX_SEATS} seats")
        if not (math.isfinite(self.max_detour_km) and self.max_detour_km >= 0):
            raise ValueError("max_detour_km must be finite and >= 0")
        if not math.isfinite(self.departure_s):
            raise ValueError("departure_s must be finite")
        seen: dict[int, StopKind] = {}
        load = 0
        for stop in self.stops:
            if not 0 <= stop.rider < len(self.riders):
                raise ValueError("a stop names a rider the trip does not have")
            expected = StopKind.PICKUP if stop.rider not in seen else StopKind.DROPOFF
            if stop.kind != expected or seen.get(stop.rider) == StopKind.DROPOFF:
                raise ValueError("each rider is picked up once, then dropped off once")
            seen[stop.rider] = stop.kind
            seats = self.riders[stop.rider].seats
            load += seats if stop.kind == StopKind.PICKUP else -seats
            if load > self.seats:
                raise ValueError("the plan carries more riders than the trip has seats")
        if len(seen) != len(self.riders) or any(k != StopKind.DROPOFF for k in seen.values()):
            raise ValueError("every rider of the trip has a pickup and a drop-off in its plan")
        if len(self.promised_etas_s) != len(self.riders):
            raise ValueError("every rider of the trip has promised ETAs")


class InsertionLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits a caller sets (from settings): the most any rider already in a plan may arrive
    later than the trip promised them, and how far a rider's heading may be from the driver's."""

    max_added_delay_s: float
    max_heading_diff_deg: float = 90.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_added_delay_s) and self.max_added_delay_s >= 0):
            raise ValueError("max_added_delay_s must be finite and >= 0")
        if not 0 <= self.max_heading_diff_deg <= 180:
            raise ValueError("max_heading_diff_deg must be within [0, 180]")


class Insertion(msgspec.Struct, frozen=True, kw_only=True):
    """Where a rider joins a plan: the new plan (the rider is the trip's next rider position),
    the positions of the rider's stops in it, the road distances and the rider's ETAs."""

    stops: tuple[Stop, ...]
    pickup_position: int
    dropoff_position: int
    #: The whole route's road length with the rider in it.
    route_km: float
    #: route_km minus the direct road distance origin -> destination: the trip's detour.
    detour_km: float
    #: What this rider adds to the route as it was.
    added_km: float
    pickup_eta_s: float
    dropoff_eta_s: float


def plan_points(trip: Trip) -> list[Point]:
    """Origin, each stop's point in plan order, destination."""
    points = [trip.origin]
    for stop in trip.stops:
        rider = trip.riders[stop.rider]
        points.append(rider.pickup if stop.kind == StopKind.PICKUP else rider.dropoff)
    points.append(trip.destination)
    return points


def route_km(trip: Trip, router: Router) -> float:
    """The road length of the trip's plan, origin to destination through every stop."""
    points = plan_points(trip)
    return sum(router.distance_km(a, b) for a, b in itertools.pairwise(points))


def detour_km(trip: Trip, router: Router) -> float:
    """How much longer the plan is than driving straight from origin to destination."""
    return route_km(trip, router) - router.distance_km(trip.origin, trip.destination)


def heading_fits(trip: Trip, rider: Rider, *, max_heading_diff_deg: float) -> bool:
    """Whether the rider heads roughly the driver's way (a trip or ride with no length fits)."""
    if trip.origin == trip.destination or rider.pickup == rider.dropoff:
        return True
    driver = bearing_deg(trip.origin, trip.destination)
    own = bearing_deg(rider.pickup, rider.dropoff)
    return angle_between_deg(driver, own) <= max_heading_diff_deg


def best_insertion(
    trip: Trip, rider: Rider, *, router: Router, limits: InsertionLimits
) -> Insertion | None:
    """The feasible insertion of the rider into the trip's plan that adds the least road distance
    (ties: the earlier pickup), or None when no insertion meets every rule of this module."""
    if rider.seats > trip.seats or not heading_fits(
        trip, rider, max_heading_diff_deg=limits.max_heading_diff_deg
    ):
        return None
    points = plan_points(trip)
    n = len(trip.stops)
    legs = _Legs(router, points, rider.pickup, rider.dropoff)
    leg_km = [legs.km(k, k + 1) for k in range(n + 1)]
    leg_s = [legs.s(k, k + 1) for k in range(n + 1)]
    arrival_s = [trip.departure_s]
    for duration in leg_s:
        arrival_s.append(arrival_s[-1] + duration)
    # load[k]: riders' seats taken on the leg from points[k] to points[k + 1].
    load = [0]
    for stop in trip.stops:
        seats = trip.riders[stop.rider].seats
        load.append(load[-1] + (seats if stop.kind == StopKind.PICKUP else -seats))
    # latest[k]: the latest time points[k] may be reached: its rider's promise plus the delay
    # limit, and for a pickup the end of the rider's window; the destination has no limit.
    latest = [math.inf]
    for stop in trip.stops:
        promised_pickup_s, promised_dropoff_s = trip.promised_etas_s[stop.rider]
        if stop.kind == StopKind.PICKUP:
            own = trip.riders[stop.rider].latest_pickup_s
            latest.append(min(own, promised_pickup_s + limits.max_added_delay_s))
        else:
            latest.append(promised_dropoff_s + limits.max_added_delay_s)
    latest.append(math.inf)
    current_km = sum(leg_km)
    budget_km = legs.direct_km(trip.origin, trip.destination) + trip.max_detour_km + _EPSILON
    P, Q = _Legs.PICKUP, _Legs.DROPOFF

    best: tuple[float, float, int, int, float, float] | None = None
    for i in range(n + 1):
        if load[i] + rider.seats > trip.seats:
            continue
        pickup_eta = arrival_s[i] + legs.s(i, P)
        if not rider.earliest_pickup_s - _EPSILON <= pickup_eta <= rider.latest_pickup_s + _EPSILON:
            continue
        for j in range(i, n + 1):
            if load[j] + rider.seats > trip.seats:
                break  # the rider would still be aboard on this leg, and on any later j
            if i == j:
                added = legs.km(i, P) + legs.km(P, Q) + legs.km(Q, i + 1) - leg_km[i]
                total_km = current_km + added
                dropoff_eta = pickup_eta + legs.s(P, Q)
                shift_mid = 0.0
                shift_after = dropoff_eta + legs.s(Q, i + 1) - arrival_s[i + 1]
            else:
                total_km = (
                    current_km
                    - leg_km[i]
                    - leg_km[j]
                    + legs.km(i, P)
                    + legs.km(P, i + 1)
                    + legs.km(j, Q)
                    + legs.km(Q, j + 1)
                )
                shift_mid = pickup_eta + legs.s(P, i + 1) - arrival_s[i + 1]
                dropoff_eta = arrival_s[j] + shift_mid + legs.s(j, Q)
                shift_after = dropoff_eta + legs.s(Q, j + 1) - arrival_s[j + 1]
            if total_km > budget_km:
                continue
            if not _others_fit(i, j, shift_mid, shift_after, arrival_s, latest, n):
                continue
            key = (total_km, pickup_eta, i, j, dropoff_eta, total_km - current_km)
            if best is None or key[:4] < best[:4]:
                best = key
    if best is None:
        return None
    total_km, pickup_eta, i, j, dropoff_eta, added_km = best
    new_rider = len(trip.riders)
    stops = list(trip.stops)
    stops.insert(j, Stop(new_rider, StopKind.DROPOFF))
    stops.insert(i, Stop(new_rider, StopKind.PICKUP))
    return Insertion(
        stops=tuple(stops),
        pickup_position=i,
        dropoff_position=j + 1,
        route_km=total_km,
        detour_km=total_km - legs.direct_km(trip.origin, trip.destination),
        added_km=added_km,
        pickup_eta_s=pickup_eta,
        dropoff_eta_s=dropoff_eta,
    )


def stop_etas_s(trip: Trip, router: Router) -> list[float]:
    """When the driver reaches each stop of the plan, in plan order (no waiting)."""
    points = plan_points(trip)
    etas = []
    clock_s = trip.departure_s
    for a, b in itertools.pairwise(points[:-1]):
        clock_s += router.duration_s(a, b)
        etas.append(clock_s)
    return etas


def rider_etas_s(trip: Trip, router: Router) -> list[tuple[float, float]]:
    """Each rider's (pickup ETA, drop-off ETA) in the trip's plan, by rider position."""
    etas: dict[int, list[float]] = {}
    for stop, eta in zip(trip.stops, stop_etas_s(trip, router), strict=True):
        etas.setdefault(stop.rider, []).append(eta)
    return [(etas[r][0], etas[r][1]) for r in range(len(trip.riders))]


def with_rider(trip: Trip, rider: Rider, insertion: Insertion) -> Trip:
    """The trip with the rider in its plan where the insertion puts them, promised its ETAs."""
    return msgspec.structs.replace(
        trip,
        riders=(*trip.riders, rider),
        stops=insertion.stops,
        promised_etas_s=(
            *trip.promised_etas_s,
            (insertion.pickup_eta_s, insertion.dropoff_eta_s),
        ),
    )


def _others_fit(
    i: int,
    j: int,
    shift_mid: float,
    shift_after: float,
    arrival_s: list[float],
    latest: list[float],
    n: int,
) -> bool:
    """Whether every existing stop (points 1..n) stays within the delay limit and its window.

    Stops at points i+1..j are shifted by shift_mid, stops at j+1..n by shift_after."""
    for k in range(i + 1, n + 1):
        shift = shift_mid if k <= j else shift_after
        if arrival_s[k] + shift > latest[k] + _EPSILON:
            return False
    return True


class _Legs:
    """Road distance and time between the plan's points (by position) and the new rider's
    pickup and drop-off, each asked of the router once."""

    PICKUP = -1
    DROPOFF = -2

    def __init__(self, router: Router, points: list[Point], pickup: Point, dropoff: Point) -> None:
        self._router = router
        self._points = points
        self._pickup = pickup
        self._dropoff = dropoff
        self._km: dict[tuple[int, int], float] = {}
        self._s: dict[tuple[int, int], float] = {}

    def _point(self, position: int) -> Point:
        if position == self.PICKUP:
            return self._pickup
        if position == self.DROPOFF:
            return self._dropoff
        return self._points[position]

    def _ask(
        self,
        cache: dict[tuple[int, int], float],
        ask: Callable[[Point, Point], float],
        a: int,
        b: int,
    ) -> float:
        value = cache.get((a, b))
        if value is None:
            value = cache[(a, b)] = ask(self._point(a), self._point(b))
        return value

    def km(self, a: int, b: int) -> float:
        return self._ask(self._km, self._router.distance_km, a, b)

    def s(self, a: int, b: int) -> float:
        return self._ask(self._s, self._router.duration_s, a, b)

    def direct_km(self, a: Point, b: Point) -> float:
        return self._router.distance_km(a, b)

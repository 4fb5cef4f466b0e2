"""Candidate (trip, rider) pairs for a whole batch at once: an h3 hierarchy joined with numpy.

The per-trip `SpatialIndex` asks h3 for the cells along each corridor, a Python loop per trip.
Here every rider sits in a group per level: its (pickup cell, drop-off cell) at that level's
h3 resolutions, coarse to fine, one side refined at a time (a group opens at most 7 children).
A trip is tested against whole groups with lower bounds that hold for every member, coarse
groups first; only the children of the groups it passes are tested at the next level, and at
the finest its riders one by one. The tests are numpy operations over all the (trip, group)
pairs of a level for a chunk of trips (the arrays then stay in the processor's cache): never a
Python step per pair, and never all pairs (groups a trip fails are never opened).

Why nothing feasible is dropped. Write H for the haversine distance. Every road leg is at least
min_circuity x its geodesic, the geodesic at least H / (1 + HAVERSINE_MAX_RELATIVE_ERROR), so
road >= m x H with m = min_circuity / (1 + that error). A plan picks the rider up at p before
dropping them at q, so its route is at least m x (H(o, p) + H(p, q) + H(q, e)) and may not
exceed the budget (direct road distance + max detour): H(o, p) + H(p, q) + H(q, e) <= budget /
m. The pickup is reached no sooner than m x H(o, p) at the router's top speed, and (when the
router states a slowest speed) no later than what is left of the budget after p at that speed.
Distances to a cell are bounded in plain 3-D geometry: the chord |o - p| through the Earth is
never longer than H(o, p), and a cell's centre c (the mean of its points) and radius rho (its
farthest point from c, measured, not assumed) give |o - p| >= |o - c| - rho for every point p
of it. A group keeps its members' smallest own distance and widest times. So a group fails a
test only if every member fails it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import h3.api.basic_int as h3
import msgspec
import numpy as np
from numpy.typing import NDArray

from matching.feasibility import Rider, Trip
from matching.geometry import (
    EARTH_RADIUS_KM,
    HAVERSINE_MAX_RELATIVE_ERROR,
    haversine_km,
    unit_vectors,
)
from matching.routing import Router, max_speed_kmh, measure_legs, min_circuity, min_speed_kmh
from matching.threads import map_chunks

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]

#: The coarsest groups are this many resolutions coarser than the finest.
_COARSER_LEVELS = 3
#: Trips are joined this many at a time (their arrays of pairs then stay in the cache).
_TRIPS_PER_CHUNK = 64
#: Chords from the expanded dot product lose up to this to rounding (km; they are ~1e-9).
_ROUNDING_KM = 1e-4
#: Slack on the bounds (relative, km and s): a pair exactly on a limit is never dropped.
_RELATIVE_SLACK = 1e-9
_SLACK_KM = 1e-9
_SLACK_S = 1e-6
#: h3 index layout: the resolution in bits 52-55, then 15 digits of 3 bits from bit 44 down.
_RESOLUTION_SHIFT = 52
_RESOLUTION_MASK = np.uint64(0xF << _RESOLUTION_SHIFT)


class RiderArrays(msgspec.Struct, frozen=True):
    """Riders as columns: pickups, drop-offs, seats and windows, one entry a rider."""

    pickup_lats: Floats
    pickup_lons: Floats
    dropoff_lats: Floats
    dropoff_lons: Floats
    seats: Ints
    earliest_s: Floats
    latest_s: Floats

    @classmethod
    def of(cls, riders: Sequence[Rider]) -> RiderArrays:
        n = len(riders)
        return cls(
            np.fromiter((r.pickup.lat for r in riders), np.float64, n),
            np.fromiter((r.pickup.lon for r in riders), np.float64, n),
            np.fromiter((r.dropoff.lat for r in riders), np.float64, n),
            np.fromiter((r.dropoff.lon for r in riders), np.float64, n),
            np.fromiter((r.seats for r in riders), np.int64, n),
            np.fromiter((r.earliest_pickup_s for r in riders), np.float64, n),
            np.fromiter((r.latest_pickup_s for r in riders), np.float64, n),
        )


class TripArrays(msgspec.Struct, frozen=True):
    """Trips as columns; direct_km is the router's road distance origin -> destination."""

    origin_lats: Floats
    origin_lons: Floats
    destination_lats: Floats
    destination_lons: Floats
    departure_s: Floats
    seats: Ints
    max_detour_km: Floats
    direct_km: Floats

    @classmethod
    def of(cls, trips: Sequence[Trip], router: Router) -> TripArrays:
        n = len(trips)
        origin_lats = np.fromiter((t.origin.lat for t in trips), np.float64, n)
        origin_lons = np.fromiter((t.origin.lon for t in trips), np.float64, n)
        destination_lats = np.fromiter((t.destination.lat for t in trips), np.float64, n)
        destination_lons = np.fromiter((t.destination.lon for t in trips), np.float64, n)
        direct_km, _ = measure_legs(
            router, origin_lats, origin_lons, destination_lats, destination_lons
        )
        return cls(
            origin_lats,
            origin_lons,
            destination_lats,
            destination_lons,
            np.fromiter((t.departure_s for t in trips), np.float64, n),
            np.fromiter((t.seats for t in trips), np.int64, n),
            np.fromiter((t.max_detour_km for t in trips), np.float64, n),
            direct_km,
        )


def cells_at(lats: Floats, lons: Floats, resolution: int) -> NDArray[np.uint64]:
    """The h3 cell (as an integer) of each point."""
    return np.fromiter(
        (
            h3.latlng_to_cell(a, b, resolution)
            for a, b in zip(lats.tolist(), lons.tolist(), strict=True)
        ),
        np.uint64,
        len(lats),
    )


def parent_cells(cells: NDArray[np.uint64], resolution: int) -> NDArray[np.uint64]:
    """Each cell's parent at this (equal or coarser) resolution, by h3's bit layout: the
    resolution field set, every digit below it set to 7 (unused)."""
    unused = np.uint64((1 << (3 * (15 - resolution))) - 1)
    level = np.uint64(resolution << _RESOLUTION_SHIFT)
    parents: NDArray[np.uint64] = (cells & ~_RESOLUTION_MASK) | level | unused
    return parents


def xyz_km(lats: Floats, lons: Floats) -> NDArray[np.float64]:
    """Points on the mean-radius sphere as 3-D vectors (km, one row a point): the chord between
    two, the straight line through the Earth, is never longer than their haversine distance."""
    xyz: NDArray[np.float64] = EARTH_RADIUS_KM * np.stack(unit_vectors(lats, lons), axis=1)
    return xyz


class _Cells(msgspec.Struct, frozen=True):
    """Points bucketed in h3 cells: each point's cell, and each cell's centre (the mean of its
    points, in 3-D) and radius (its farthest point from the centre, measured)."""

    of: Ints
    centres: NDArray[np.float64]
    radius_km: Floats

    @classmethod
    def of_points(cls, cells: NDArray[np.uint64], xyz: NDArray[np.float64]) -> _Cells:
        _, of = np.unique(cells, return_inverse=True)
        of = of.astype(np.int64)
        count = np.bincount(of).astype(np.float64)
        centres = np.stack([np.bincount(of, weights=xyz[:, k]) / count for k in range(3)], axis=1)
        radius = np.zeros(len(count))
        np.maximum.at(radius, of, _distances(centres[of], xyz))
        return cls(of, centres, radius)

    def gaps_km(self, xyz: NDArray[np.float64]) -> Floats:
        """For each point (row) and cell (column): a lower bound of the chord from the point
        to any point of the cell."""
        gaps = np.sqrt(
            np.maximum(
                0.0,
                (xyz * xyz).sum(1)[:, None]
                + (self.centres * self.centres).sum(1)[None, :]
                - 2.0 * xyz @ self.centres.T,
            )
        )
        # The expansion above loses a little to rounding: widen the radius by far more.
        bounds: Floats = np.maximum(0.0, gaps - self.radius_km[None, :] - _ROUNDING_KM)
        return bounds


class _Level(msgspec.Struct, frozen=True):
    """The riders' groups at one pair of resolutions: (pickup cell, drop-off cell). What bounds
    every member of a group: its cells, the shortest own distance, the widest times."""

    group_of: Ints  # by rider
    pickup_cell: Ints  # by group
    dropoff_cell: Ints
    pickup_cells: _Cells
    dropoff_cells: _Cells
    own_min_km: Floats
    earliest_min_s: Floats
    latest_max_s: Floats
    seats_min: Ints


def _level(
    riders: RiderArrays, own_km: Floats, pickup_cells: _Cells, dropoff_cells: _Cells
) -> _Level:
    key = pickup_cells.of * len(dropoff_cells.radius_km) + dropoff_cells.of
    unique, group_of = np.unique(key, return_inverse=True)
    group_of = group_of.astype(np.int64)
    groups = len(unique)
    own_min = np.full(groups, np.inf)
    np.minimum.at(own_min, group_of, own_km)
    earliest_min = np.full(groups, np.inf)
    np.minimum.at(earliest_min, group_of, riders.earliest_s)
    latest_max = np.full(groups, -np.inf)
    np.maximum.at(latest_max, group_of, riders.latest_s)
    seats_min = np.full(groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(seats_min, group_of, riders.seats)
    return _Level(
        group_of,
        unique // len(dropoff_cells.radius_km),
        unique % len(dropoff_cells.radius_km),
        pickup_cells,
        dropoff_cells,
        own_min,
        earliest_min,
        latest_max,
        seats_min,
    )


class _Bounds(msgspec.Struct, frozen=True):
    """Per trip, what the tests compare with: the haversine reach (with its slack), and the
    factors from a distance to the soonest and the latest pickup time."""

    reach_km: Floats
    budget_km: Floats
    departure_s: Floats
    seats: Ints
    #: Seconds to drive a km of haversine at the top speed (lower bound), or None.
    soonest_s_per_km: float | None
    m: float
    #: Seconds a road km takes at the slowest speed (upper bound), or None.
    latest_s_per_km: float | None


def _keep(
    bounds: _Bounds,
    chunk: Ints,
    t: Ints,
    item: Ints,
    to_pickup_km: Floats,
    from_dropoff_km: Floats,
    own_km: Floats,
    earliest_s: Floats,
    latest_s: Floats,
    seats: Ints,
) -> Ints:
    """The positions of the (chunk[t], item) pairs whose lower bounds (km to the pickup and from
    the drop-off, by pair; the item's own km) and the item's widest times may still fit the
    trip. Own km, times and seats are by item (a group or a rider); the distance goes first:
    it cuts most."""
    after = own_km[item] + from_dropoff_km
    kept = np.flatnonzero(to_pickup_km + after <= bounds.reach_km[chunk][t])
    t, item, to_pickup_km, after = chunk[t[kept]], item[kept], to_pickup_km[kept], after[kept]
    ok = seats[item] <= bounds.seats[t]
    departure = bounds.departure_s[t]
    if bounds.soonest_s_per_km is not None:
        soonest = departure + to_pickup_km * bounds.soonest_s_per_km
        ok &= latest_s[item] >= soonest - _SLACK_S - np.abs(soonest) * _RELATIVE_SLACK
    if bounds.latest_s_per_km is not None:
        left_km = bounds.budget_km[t] - bounds.m * after
        latest = departure + left_km * bounds.latest_s_per_km
        ok &= earliest_s[item] <= latest + _SLACK_S + np.abs(latest) * _RELATIVE_SLACK
    result: Ints = kept[ok]
    return result


def _expand(parents: Ints, starts: Ints, counts: Ints) -> tuple[Ints, Ints]:
    """For each parent i, its children starts[i] .. starts[i] + counts[i] - 1: (the position of
    each child's parent, the child's position)."""
    per_parent = counts[parents]
    which = np.repeat(np.arange(len(parents)), per_parent)
    first = np.cumsum(per_parent) - per_parent
    positions = (starts[parents] - first)[which] + np.arange(len(which))
    return which, positions


def _chords(a: NDArray[np.float64], i: Ints, b: NDArray[np.float64], j: Ints) -> Floats:
    """|a[:, i] - b[:, j]| for points stored as three rows (x, y, z): 1-D gathers are fast."""
    squares = np.zeros(len(i))
    for k in range(3):
        d = a[k][i] - b[k][j]
        squares += d * d
    chords: Floats = np.sqrt(squares)
    return chords


def _distances(a: NDArray[np.float64], b: NDArray[np.float64]) -> Floats:
    d = a - b
    distances: Floats = np.sqrt(np.einsum("ij,ij->i", d, d))
    return distances


def candidate_pairs(
    trips: TripArrays,
    riders: RiderArrays,
    *,
    router: Router,
    resolution: int,
) -> tuple[Ints, Ints]:
    """Every (trip, rider) pair that may fit (trip positions, rider positions; in no particular
    order), and some that do not: never one that does, with any plan the trip may have.

    resolution: the finest h3 resolution of the riders' groups (city: 7, about 1.2 km a cell
    edge; the coarsest is three coarser)."""
    empty = np.empty(0, dtype=np.int64)
    if not len(trips.seats) or not len(riders.seats):
        return empty, empty
    if not 0 <= resolution <= 15:
        raise ValueError("an h3 resolution is within 0..15")
    m = min_circuity(router) / (1 + HAVERSINE_MAX_RELATIVE_ERROR)
    budget = trips.direct_km + trips.max_detour_km
    top_speed, slowest = max_speed_kmh(router), min_speed_kmh(router)
    reach = budget / m
    bounds = _Bounds(
        reach * (1 + _RELATIVE_SLACK) + _SLACK_KM,
        budget,
        trips.departure_s,
        trips.seats,
        m / top_speed * 3600.0 if top_speed else None,
        m,
        3600.0 / slowest if slowest else None,
    )
    own_km = haversine_km(
        riders.pickup_lats, riders.pickup_lons, riders.dropoff_lats, riders.dropoff_lons
    )
    pickup_xyz = xyz_km(riders.pickup_lats, riders.pickup_lons)
    dropoff_xyz = xyz_km(riders.dropoff_lats, riders.dropoff_lons)
    origin_xyz = xyz_km(trips.origin_lats, trips.origin_lons)
    destination_xyz = xyz_km(trips.destination_lats, trips.destination_lons)
    coarsest = max(0, resolution - _COARSER_LEVELS)
    pickup_at = _cells_by_resolution(
        riders.pickup_lats, riders.pickup_lons, pickup_xyz, coarsest, resolution
    )
    dropoff_at = _cells_by_resolution(
        riders.dropoff_lats, riders.dropoff_lons, dropoff_xyz, coarsest, resolution
    )
    # Refine one side at a time: each step opens at most 7 children a group.
    steps = [(coarsest, coarsest)]
    for res in range(coarsest + 1, resolution + 1):
        steps += [(res, res - 1), (res, res)]
    levels = [_level(riders, own_km, pickup_at[p], dropoff_at[q]) for p, q in steps]
    children = [_members(a.group_of, b.group_of) for a, b in itertools.pairwise(levels)]
    riders_of = _members(levels[-1].group_of, np.arange(len(own_km), dtype=np.int64))
    pickup_columns = np.ascontiguousarray(pickup_xyz.T)
    dropoff_columns = np.ascontiguousarray(dropoff_xyz.T)
    # A chunk of trips at a time, so that the arrays of pairs stay in the processor's cache.
    n_trips = len(trips.seats)
    per_chunk = _TRIPS_PER_CHUNK

    def join(first: int) -> tuple[Ints, Ints]:
        chunk = np.arange(first, min(n_trips, first + per_chunk), dtype=np.int64)
        to_pickup = {
            res: cells.gaps_km(origin_xyz[chunk]).ravel() for res, cells in pickup_at.items()
        }
        from_dropoff = {
            res: cells.gaps_km(destination_xyz[chunk]).ravel() for res, cells in dropoff_at.items()
        }
        # t: a position in the chunk, g: a group of the level.
        t = np.repeat(np.arange(len(chunk)), len(levels[0].own_min_km))
        g = np.tile(np.arange(len(levels[0].own_min_km)), len(chunk))
        for depth, ((p_res, q_res), level) in enumerate(zip(steps, levels, strict=True)):
            if depth:
                which, positions = _expand(g, *children[depth - 1][:2])
                t, g = t[which], children[depth - 1][2][positions]
            kept = _keep(
                bounds,
                chunk,
                t,
                g,
                to_pickup[p_res][t * len(pickup_at[p_res].radius_km) + level.pickup_cell[g]],
                from_dropoff[q_res][t * len(dropoff_at[q_res].radius_km) + level.dropoff_cell[g]],
                level.own_min_km,
                level.earliest_min_s,
                level.latest_max_s,
                level.seats_min,
            )
            t, g = t[kept], g[kept]
        # The riders of the finest groups passed, each by its own distances and times.
        which, positions = _expand(g, *riders_of[:2])
        t, r = t[which], riders_of[2][positions]
        kept = _keep(
            bounds,
            chunk,
            t,
            r,
            _chords(origin_xyz[chunk].T, t, pickup_columns, r),
            _chords(destination_xyz[chunk].T, t, dropoff_columns, r),
            own_km,
            riders.earliest_s,
            riders.latest_s,
            riders.seats,
        )
        return chunk[t[kept]], r[kept]

    found = map_chunks(join, range(0, n_trips, per_chunk))
    return np.concatenate([t for t, _ in found]), np.concatenate([r for _, r in found])


def _cells_by_resolution(
    lats: Floats, lons: Floats, xyz: NDArray[np.float64], coarsest: int, finest: int
) -> dict[int, _Cells]:
    cells = cells_at(lats, lons, finest)
    return {
        res: _Cells.of_points(parent_cells(cells, res), xyz) for res in range(coarsest, finest + 1)
    }


def _members(parent_of: Ints, child_of: Ints) -> tuple[Ints, Ints, Ints]:
    """CSR of the children of each parent, from each rider's parent and child (groups, or the
    rider itself): (starts, counts, children ordered by parent)."""
    n_children = int(child_of.max()) + 1
    parent_of_child = np.empty(n_children, dtype=np.int64)
    parent_of_child[child_of] = parent_of
    children = np.argsort(parent_of_child, kind="stable").astype(np.int64)
    counts = np.bincount(parent_of_child, minlength=int(parent_of.max()) + 1).astype(np.int64)
    starts = np.cumsum(counts) - counts
    return starts, counts, children

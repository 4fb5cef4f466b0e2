"""An h3 grid index over riders' pickups and drop-offs: the candidates for a trip come from the
cells along its corridor, never from a scan of all pairs.

Why the corridor holds every feasible rider. A rider's pickup p (and drop-off q) lies on the
driver's route o -> ... -> p -> ... -> d, so the route is at least min_circuity x (g(o, p) +
g(p, d)) long (g: the geodesic; every road leg is at least min_circuity x its geodesic, and the
geodesic obeys the triangle inequality). The route may not exceed the direct road distance plus
max_detour_km, so g(o, p) + g(p, d) <= reach_km = (road(o, d) + max_detour_km) / min_circuity:
p lies in the ellipse with foci o and d whose distance sum is reach_km (see `corridor_reach_km`).
That ellipse lies within its semi-minor axis b of the segment o-d, so the cells within grid
distance k of cells sampled along the segment cover it, with k derived from h3's worst cell
shapes (`_grid_steps`). Points in those cells are then tested against the ellipse itself with the
vectorised haversine, widened by its worst error, so nothing feasible is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import h3
import numpy as np
from numpy.typing import NDArray

from matching.geometry import (
    EARTH_RADIUS_KM,
    HAVERSINE_MAX_RELATIVE_ERROR,
    Point,
    haversine_km,
    intermediate_point,
)

#: The longest corridor an index answers for (a distance sum, km): beyond it the ellipse is no
#: longer small against the Earth and the covering argument would need care it has not had.
MAX_REACH_KM = 5_000.0
#: Measured over every cell of resolutions 2-4 (h3 is self-similar): the distance between the
#: centres of two neighbouring cells is at least 1.21 x the resolution's average hexagon edge,
#: and no point of a cell is more than 1.10 x that edge from its centre. Both with a margin.
_MIN_NEIGHBOUR_SPACING_EDGES = 1.10
_MAX_CENTRE_TO_VERTEX_EDGES = 1.20
#: A query coarsens its resolution until a corridor needs no more grid steps than this.
_TARGET_GRID_STEPS = 6
#: Widening of the semi-minor axis for the sphere (tiny below MAX_REACH_KM) and float noise.
_AXIS_MARGIN = 1.02


def corridor_reach_km(*, direct_road_km: float, max_detour_km: float, min_circuity: float) -> float:
    """The largest g(o, x) + g(x, d) (geodesic km) of any stop x a trip with this detour can make.

    min_circuity: the router's road distance is never below the geodesic times this."""
    if min_circuity <= 0 or direct_road_km < 0 or max_detour_km < 0:
        raise ValueError("min_circuity must be positive, distances non-negative")
    return (direct_road_km + max_detour_km) / min_circuity


def _edge_km(resolution: int) -> float:
    return float(h3.average_hexagon_edge_length(resolution, unit="km"))


def _grid_steps(radius_km: float, resolution: int) -> int:
    """Grid distance k such that every point within radius_km of a point s lies in a cell
    within k steps of s's cell, at this resolution.

    The two cell centres are at most radius + 2 x (centre-to-vertex) apart; cells k + 1 steps
    apart in a hexagon grid have centres at least (k + 1) x spacing x sqrt(3)/2 apart."""
    edge = _edge_km(resolution)
    span = radius_km + 2 * _MAX_CENTRE_TO_VERTEX_EDGES * edge
    return math.ceil(span / (_MIN_NEIGHBOUR_SPACING_EDGES * edge * math.sqrt(3) / 2))


def _semi_minor_km(length_km: float, reach_km: float) -> float:
    """The semi-minor axis of the spherical ellipse with foci length_km apart and sum reach_km:
    no point of it is farther from the segment between its foci."""
    if reach_km <= length_km:
        return 0.0
    ratio = math.cos(reach_km / (2 * EARTH_RADIUS_KM)) / math.cos(length_km / (2 * EARTH_RADIUS_KM))
    return EARTH_RADIUS_KM * math.acos(min(1.0, ratio))


class SpatialIndex:
    """Riders' pickups and drop-offs (the i-th of each is rider i) bucketed in h3 cells.

    resolution: the finest h3 resolution (0-15); a long corridor is covered with coarser
    parents of the same cells, so a query costs about the same for a 5 km and a 500 km trip.
    Pick it so a cell edge is near the half-width of a typical corridor (city: 7, about 1.4 km).
    """

    def __init__(
        self, pickups: Sequence[Point], dropoffs: Sequence[Point], *, resolution: int
    ) -> None:
        if len(pickups) != len(dropoffs):
            raise ValueError("one drop-off for each pickup")
        if not 0 <= resolution <= 15:
            raise ValueError("an h3 resolution is within 0..15")
        self.resolution = resolution
        self._pickup_lats = np.array([p.lat for p in pickups], dtype=np.float64)
        self._pickup_lons = np.array([p.lon for p in pickups], dtype=np.float64)
        self._dropoff_lats = np.array([p.lat for p in dropoffs], dtype=np.float64)
        self._dropoff_lons = np.array([p.lon for p in dropoffs], dtype=np.float64)
        self._pickup_cells = [h3.latlng_to_cell(p.lat, p.lon, resolution) for p in pickups]
        self._dropoff_cells = [h3.latlng_to_cell(p.lat, p.lon, resolution) for p in dropoffs]
        self._buckets: dict[int, tuple[dict[str, list[int]], dict[str, list[int]]]] = {}

    def __len__(self) -> int:
        return len(self._pickup_cells)

    def _buckets_at(self, resolution: int) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """Riders by pickup cell and by drop-off cell at this (equal or coarser) resolution."""
        if resolution not in self._buckets:
            self._buckets[resolution] = (
                _bucket(self._pickup_cells, resolution),
                _bucket(self._dropoff_cells, resolution),
            )
        return self._buckets[resolution]

    def candidates(self, origin: Point, destination: Point, *, reach_km: float) -> NDArray[np.intp]:
        """Every rider whose pickup and drop-off both satisfy g(o, x) + g(x, d) <= reach_km
        (ascending rider numbers), and possibly a few more. Never misses one.

        reach_km: from `corridor_reach_km`; at most MAX_REACH_KM."""
        if not 0 <= reach_km <= MAX_REACH_KM:
            raise ValueError(f"reach_km must be within [0, {MAX_REACH_KM}]")
        if not len(self):
            return np.empty(0, dtype=np.intp)
        length_km = float(haversine_km(origin.lat, origin.lon, destination.lat, destination.lon))
        # On the sphere haversine_km measures on, a stop within reach of the geodesic is within
        # this reach of the haversine.
        reach_h = reach_km * (1 + HAVERSINE_MAX_RELATIVE_ERROR)
        half_width = _semi_minor_km(length_km, reach_h) * _AXIS_MARGIN
        resolution = self.resolution
        while resolution > 0 and _grid_steps(half_width, resolution) > _TARGET_GRID_STEPS:
            resolution -= 1
        step_km = max(half_width, _edge_km(resolution))
        samples = max(1, math.ceil(length_km / step_km))
        steps = _grid_steps(half_width + step_km / 2, resolution)
        cells: set[str] = set()
        for i in range(samples + 1):
            s = intermediate_point(origin, destination, i / samples)
            cells.update(h3.grid_disk(h3.latlng_to_cell(s.lat, s.lon, resolution), steps))
        by_pickup, by_dropoff = self._buckets_at(resolution)
        picked = _riders_in(by_pickup, cells)
        if not picked:
            return np.empty(0, dtype=np.intp)
        found = np.array(sorted(picked.intersection(_riders_in(by_dropoff, cells))), dtype=np.intp)
        within = _within_ellipse(
            self._pickup_lats[found], self._pickup_lons[found], origin, destination, reach_h
        ) & _within_ellipse(
            self._dropoff_lats[found], self._dropoff_lons[found], origin, destination, reach_h
        )
        candidates: NDArray[np.intp] = found[within]
        return candidates


def _bucket(cells: Sequence[str], resolution: int) -> dict[str, list[int]]:
    buckets: dict[str, list[int]] = {}
    parents: dict[str, str] = {}
    for rider, cell in enumerate(cells):
        parent = parents.get(cell)
        if parent is None:
            same = h3.get_resolution(cell) == resolution
            parent = parents[cell] = cell if same else h3.cell_to_parent(cell, resolution)
        buckets.setdefault(parent, []).append(rider)
    return buckets


def _riders_in(buckets: dict[str, list[int]], cells: Iterable[str]) -> set[int]:
    riders: set[int] = set()
    for cell in cells:
        found = buckets.get(cell)
        if found:
            riders.update(found)
    return riders


def _within_ellipse(
    lats: NDArray[np.float64],
    lons: NDArray[np.float64],
    origin: Point,
    destination: Point,
    reach_km: float,
) -> NDArray[np.bool_]:
    sums = haversine_km(origin.lat, origin.lon, lats, lons) + haversine_km(
        lats, lons, destination.lat, destination.lon
    )
    # A relative hair of slack: a pair exactly on the boundary must not fall to float rounding.
    inside: NDArray[np.bool_] = sums <= reach_km * (1 + 1e-9) + 1e-9
    return inside

"""Road distance and travel time between two points, behind a seam a road router can fill.

Matching asks only a `Router`; the default `EstimatingRouter` estimates from the geodesic, so an
OSRM or Valhalla adapter (same two methods) replaces it without touching matching. The spatial
index assumes a router's road distance is never shorter than the geodesic times `min_circuity`
(1.0 for any real road network; the circuity factor for `EstimatingRouter`), and prunes by time
only with a router that states `max_speed_kmh` (no leg is driven faster on average) and, for the
latest possible pickup, `min_speed_kmh`. A router may also answer many legs at once
(`measure_legs`, e.g. an OSRM table request; numpy on the sphere for `EstimatingRouter`) and say
it is `symmetric`; batch matching asks it that way, and leg by leg when it cannot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

import msgspec
import numpy as np
from numpy.typing import NDArray

from matching.geometry import (
    HAVERSINE_MAX_RELATIVE_ERROR,
    Point,
    geodesic_km,
    great_circle_from_chords_km,
    great_circle_km,
    haversine_km,
)

Floats = NDArray[np.float64]

SECONDS_PER_HOUR = 3600.0


class Router(Protocol):
    """Road distance (km) and driving time (s) from a to b; both >= 0, 0 from a point to itself.

    Safe to call from several threads at once: a batch's chunks run in threads
    (matching.threads)."""

    def distance_km(self, a: Point, b: Point) -> float: ...

    def duration_s(self, a: Point, b: Point) -> float: ...


class BulkRouter(Router, Protocol):
    """A Router that also answers many legs at once (arrays of equal length, degrees in; road
    km and seconds out), each exactly what distance_km and duration_s answer for that leg."""

    def measure_legs(
        self, a_lats: Floats, a_lons: Floats, b_lats: Floats, b_lons: Floats
    ) -> tuple[Floats, Floats]: ...


class Earth(StrEnum):
    """The surface EstimatingRouter measures on."""

    #: WGS84, geopy's geodesic: the distances shown to users (~65 us a leg).
    ELLIPSOID = "ellipsoid"
    #: The mean-radius sphere: within 0.6 % of the ellipsoid, ~50x faster, for huge batches.
    SPHERE = "sphere"


class EstimatingRouter(msgspec.Struct, frozen=True, kw_only=True):
    """Road distance = geodesic x circuity_factor; duration = that distance at average_speed_kmh.

    Both values are settings (COPOOL_CIRCUITY_FACTOR, COPOOL_AVERAGE_SPEED_KMH) the caller passes.
    earth: the ellipsoid (default) or, where a batch is too big for it, the sphere.
    """

    average_speed_kmh: float
    circuity_factor: float = 1.3
    earth: Earth = Earth.ELLIPSOID

    def __post_init__(self) -> None:
        if not (math.isfinite(self.circuity_factor) and 1.0 <= self.circuity_factor <= 5.0):
            raise ValueError("circuity_factor must be within [1, 5]")
        if not (math.isfinite(self.average_speed_kmh) and 0.0 < self.average_speed_kmh <= 300.0):
            raise ValueError("average_speed_kmh must be within (0, 300]")

    @property
    def min_circuity(self) -> float:
        """Road distance is never below geodesic x this: the circuity factor on the ellipsoid,
        less the sphere's worst error on the sphere."""
        if self.earth == Earth.SPHERE:
            return self.circuity_factor / (1 + HAVERSINE_MAX_RELATIVE_ERROR)
        return self.circuity_factor

    @property
    def max_speed_kmh(self) -> float:
        """No leg is driven faster than this on average (every leg at exactly this speed here)."""
        return self.average_speed_kmh

    @property
    def symmetric(self) -> bool:
        """a to b is as far and as long as b to a."""
        return True

    @property
    def min_speed_kmh(self) -> float:
        """No leg is driven slower than this on average (every leg at exactly this speed here)."""
        return self.average_speed_kmh

    def distance_km(self, a: Point, b: Point) -> float:
        if self.earth == Earth.SPHERE:
            return great_circle_km(a, b) * self.circuity_factor
        return geodesic_km(a, b) * self.circuity_factor

    def duration_s(self, a: Point, b: Point) -> float:
        return self.distance_km(a, b) / self.average_speed_kmh * SECONDS_PER_HOUR

    def measure_chords(
        self, a: tuple[Floats, Floats, Floats], b: tuple[Floats, Floats, Floats]
    ) -> tuple[Floats, Floats]:
        """measure_legs for points given as unit vectors (geometry.unit_vectors), on the sphere
        only: a batch that measures the same points again and again converts them once."""
        if self.earth != Earth.SPHERE:
            raise ValueError("chords measure on the sphere only")
        km = great_circle_from_chords_km(a, b) * self.circuity_factor
        seconds: Floats = km / self.average_speed_kmh * SECONDS_PER_HOUR
        return km, seconds

    def measure_legs(
        self, a_lats: Floats, a_lons: Floats, b_lats: Floats, b_lons: Floats
    ) -> tuple[Floats, Floats]:
        """Road km and seconds of many legs: numpy on the sphere, one geodesic a leg (slow) on
        the ellipsoid."""
        if self.earth == Earth.SPHERE:
            km = haversine_km(a_lats, a_lons, b_lats, b_lons) * self.circuity_factor
        else:
            km = np.array(
                [
                    geodesic_km(Point(a, b), Point(c, d)) * self.circuity_factor
                    for a, b, c, d in zip(
                        np.asarray(a_lats).tolist(),
                        np.asarray(a_lons).tolist(),
                        np.asarray(b_lats).tolist(),
                        np.asarray(b_lons).tolist(),
                        strict=True,
                    )
                ],
                dtype=np.float64,
            )
        seconds: Floats = km / self.average_speed_kmh * SECONDS_PER_HOUR
        return km, seconds


Vectors = tuple[Floats, Floats, Floats]
ChordMeasure = Callable[[Vectors, Vectors], tuple[Floats, Floats]]


def chord_measure(router: Router) -> ChordMeasure | None:
    """The router's measure of legs between unit vectors, if it measures on the sphere."""
    if isinstance(router, EstimatingRouter) and router.earth == Earth.SPHERE:
        return router.measure_chords
    return None


def min_circuity(router: Router) -> float:
    """How much longer than the geodesic the router's roads are at least (1.0 unless it says)."""
    value = getattr(router, "min_circuity", 1.0)
    return float(value) if isinstance(value, int | float) else 1.0


def max_speed_kmh(router: Router) -> float | None:
    """The fastest average speed of any leg the router answers, if it says (else None)."""
    value = getattr(router, "max_speed_kmh", None)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def min_speed_kmh(router: Router) -> float | None:
    """The slowest average speed of any leg the router answers, if it says (else None)."""
    value = getattr(router, "min_speed_kmh", None)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def is_symmetric(router: Router) -> bool:
    """Whether the router says a to b always equals b to a (roads with one-way streets: no)."""
    return getattr(router, "symmetric", False) is True


def measure_legs(
    router: Router, a_lats: Floats, a_lons: Floats, b_lats: Floats, b_lons: Floats
) -> tuple[Floats, Floats]:
    """Road km and seconds of many legs: the router's own bulk answer when it has one, else
    one distance_km and one duration_s a leg."""
    bulk = getattr(router, "measure_legs", None)
    if bulk is not None:
        km, seconds = bulk(a_lats, a_lons, b_lats, b_lons)
        return np.asarray(km, dtype=np.float64), np.asarray(seconds, dtype=np.float64)
    pairs = [
        (Point(a, b), Point(c, d))
        for a, b, c, d in zip(
            np.asarray(a_lats).tolist(),
            np.asarray(a_lons).tolist(),
            np.asarray(b_lats).tolist(),
            np.asarray(b_lons).tolist(),
            strict=True,
        )
    ]
    return (
        np.array([router.distance_km(a, b) for a, b in pairs], dtype=np.float64),
        np.array([router.duration_s(a, b) for a, b in pairs], dtype=np.float64),
    )

"""Road distance and travel time between two points, behind a seam a road router can fill.

Matching asks only a `Router`; the default `EstimatingRouter` estimates from the geodesic, so an
OSRM or Valhalla adapter (same two methods) replaces it without touching matching. The spatial
index assumes a router's road distance is never shorter than the geodesic times `min_circuity`
(1.0 for any real road network; the circuity factor for `EstimatingRouter`).
"""

from __future__ import annotations

import math
from typing import Protocol

import msgspec

from matching.geometry import Point, geodesic_km

SECONDS_PER_HOUR = 3600.0


class Router(Protocol):
    """Road distance (km) and driving time (s) from a to b; both >= 0, 0 from a point to itself."""

    def distance_km(self, a: Point, b: Point) -> float: ...

    def duration_s(self, a: Point, b: Point) -> float: ...


class EstimatingRouter(msgspec.Struct, frozen=True, kw_only=True):
    """Road distance = geodesic x circuity_factor; duration = that distance at average_speed_kmh.

    Both values are settings (COPOOL_CIRCUITY_FACTOR, COPOOL_AVERAGE_SPEED_KMH) the caller passes.
    """

    average_speed_kmh: float
    circuity_factor: float = 1.3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.circuity_factor) and 1.0 <= self.circuity_factor <= 5.0):
            raise ValueError("circuity_factor must be within [1, 5]")
        if not (math.isfinite(self.average_speed_kmh) and 0.0 < self.average_speed_kmh <= 300.0):
            raise ValueError("average_speed_kmh must be within (0, 300]")

    @property
    def min_circuity(self) -> float:
        """Road distance is never below geodesic x this (exactly the circuity factor here)."""
        return self.circuity_factor

    def distance_km(self, a: Point, b: Point) -> float:
        return geodesic_km(a, b) * self.circuity_factor

    def duration_s(self, a: Point, b: Point) -> float:
        return self.distance_km(a, b) / self.average_speed_kmh * SECONDS_PER_HOUR


def min_circuity(router: Router) -> float:
    """How much longer than the geodesic the router's roads are at least (1.0 unless it says)."""
    value = getattr(router, "min_circuity", 1.0)
    return float(value) if isinstance(value, int | float) else 1.0

"""Points on the WGS84 ellipsoid, distances and bearings (pure: plain values in, plain values out).

Two distances, for two jobs:
- `geodesic_km` (geopy, Karney's algorithm on the WGS84 ellipsoid, ~0.1 ms a pair) for single
  answers a user sees and for the default Router;
- `haversine_km` (numpy, a sphere of the mean Earth radius, millions a second) for pruning many
  pairs at once. It differs from the geodesic by at most `HAVERSINE_MAX_RELATIVE_ERROR` (0.56 %
  measured, the sphere's flattening error), so a pruning test widened by that factor never drops
  a pair the geodesic would keep.
"""

from __future__ import annotations

import math
from functools import lru_cache

import msgspec
import numpy as np
from geopy.distance import geodesic
from numpy.typing import ArrayLike, NDArray

Floats = NDArray[np.float64]

#: Mean Earth radius (IUGG), the sphere haversine_km measures on.
EARTH_RADIUS_KM = 6371.0088
#: haversine_km / geodesic_km - 1 stays within this, anywhere on Earth (measured max 0.0056).
HAVERSINE_MAX_RELATIVE_ERROR = 0.006


class Point(msgspec.Struct, frozen=True):
    """A WGS84 position in degrees; latitude within [-90, 90], longitude within [-180, 180]."""

    lat: float
    lon: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and -90.0 <= self.lat <= 90.0):
            raise ValueError(f"latitude must be within [-90, 90], got {self.lat!r}")
        if not (math.isfinite(self.lon) and -180.0 <= self.lon <= 180.0):
            raise ValueError(f"longitude must be within [-180, 180], got {self.lon!r}")


@lru_cache(maxsize=1 << 16)
def geodesic_km(a: Point, b: Point) -> float:
    """The geodesic distance between two points on the WGS84 ellipsoid, in km.

    Cached: a batch asks for the same legs (a trip's origin to destination) many times."""
    return float(geodesic((a.lat, a.lon), (b.lat, b.lon)).km)


def great_circle_km(a: Point, b: Point) -> float:
    """haversine_km for one pair, in plain floats (~1 us): the sphere, not the ellipsoid."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    h = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(b.lon - a.lon) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, max(0.0, h))))


def haversine_km(
    lats1: ArrayLike, lons1: ArrayLike, lats2: ArrayLike, lons2: ArrayLike
) -> NDArray[np.float64]:
    """Great-circle distances on the mean-radius sphere, element-wise (numpy broadcasting), km.

    Within HAVERSINE_MAX_RELATIVE_ERROR of geodesic_km; for pruning, not for answers."""
    phi1 = np.radians(np.asarray(lats1, dtype=np.float64))
    phi2 = np.radians(np.asarray(lats2, dtype=np.float64))
    dphi = phi2 - phi1
    dlam = np.radians(np.asarray(lons2, dtype=np.float64) - np.asarray(lons1, dtype=np.float64))
    h = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlam / 2) ** 2
    # Rounding can push h a hair above 1 for antipodal points; arcsin would answer NaN.
    distances: NDArray[np.float64] = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0, 1)))
    return distances


def unit_vectors(lats: Floats, lons: Floats) -> tuple[Floats, Floats, Floats]:
    """Points (degrees, arrays of any shape) as x, y, z on the unit sphere: the arrays
    `great_circle_from_chords_km` measures between, with no trigonometry a leg."""
    phi, lam = np.radians(lats), np.radians(lons)
    cos_phi = np.cos(phi)
    return cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)


def great_circle_from_chords_km(
    a: tuple[Floats, Floats, Floats], b: tuple[Floats, Floats, Floats]
) -> Floats:
    """haversine_km between points given as unit vectors, element-wise: the same great circle
    (haversine's h is the squared half chord), one square root and one arcsine a leg instead
    of four sines and cosines; equal to haversine_km up to rounding (~1e-12 relative)."""
    squares = np.zeros(np.broadcast_shapes(a[0].shape, b[0].shape))
    for u, v in zip(a, b, strict=True):
        d = u - v
        squares += d * d
    half: Floats = np.sqrt(squares) * 0.5
    np.minimum(half, 1.0, out=half)  # antipodes: rounding may pass 1, where arcsin is NaN
    distances: Floats = 2 * EARTH_RADIUS_KM * np.arcsin(half)
    return distances


def bearing_deg(a: Point, b: Point) -> float:
    """The initial great-circle bearing from a to b, degrees clockwise from north in [0, 360).

    0 when the points coincide (no direction)."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dlam = math.radians(b.lon - a.lon)
    y = math.sin(dlam) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlam)
    if x == 0.0 and y == 0.0:
        return 0.0
    bearing = math.degrees(math.atan2(y, x)) % 360.0
    # A bearing a hair below 0 wraps to exactly 360.0 in floating point: that is north.
    return 0.0 if bearing == 360.0 else bearing


def angle_between_deg(bearing1_deg: float, bearing2_deg: float) -> float:
    """The smaller angle between two bearings, in [0, 180]."""
    difference = abs(bearing1_deg - bearing2_deg) % 360.0
    return min(difference, 360.0 - difference)


def intermediate_point(a: Point, b: Point, fraction: float) -> Point:
    """The point at `fraction` (0..1) of the great circle from a to b (on the sphere)."""
    phi1, lam1 = math.radians(a.lat), math.radians(a.lon)
    phi2, lam2 = math.radians(b.lat), math.radians(b.lon)
    delta = float(haversine_km(a.lat, a.lon, b.lat, b.lon)) / EARTH_RADIUS_KM
    if delta == 0.0:
        return a
    if math.isclose(delta, math.pi):
        raise ValueError("antipodal points have no single great circle between them")
    sin_delta = math.sin(delta)
    wa = math.sin((1 - fraction) * delta) / sin_delta
    wb = math.sin(fraction * delta) / sin_delta
    x = wa * math.cos(phi1) * math.cos(lam1) + wb * math.cos(phi2) * math.cos(lam2)
    y = wa * math.cos(phi1) * math.sin(lam1) + wb * math.cos(phi2) * math.sin(lam2)
    z = wa * math.sin(phi1) + wb * math.sin(phi2)
    lat = math.degrees(math.atan2(z, math.hypot(x, y)))
    lon = math.degrees(math.atan2(y, x))
    return Point(max(-90.0, min(90.0, lat)), max(-180.0, min(180.0, lon)))

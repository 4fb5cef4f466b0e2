"""Geometry: points validated to WGS84, geodesic answers, a haversine that stays near them."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from matching.geometry import (
    HAVERSINE_MAX_RELATIVE_ERROR,
    Point,
    angle_between_deg,
    bearing_deg,
    geodesic_km,
    great_circle_from_chords_km,
    haversine_km,
    intermediate_point,
    unit_vectors,
)
from matching.routing import Earth, EstimatingRouter, chord_measure, measure_legs, min_circuity

latitudes = st.floats(-90, 90)
longitudes = st.floats(-180, 180)
points = st.builds(Point, latitudes, longitudes)

PARIS = Point(48.8566, 2.3522)
LONDON = Point(51.5074, -0.1278)


@pytest.mark.parametrize(
    ("lat", "lon"), [(90.5, 0), (-91, 0), (0, 180.01), (0, -181), (math.nan, 0), (0, math.inf)]
)
def test_a_point_outside_wgs84_range_is_refused(lat: float, lon: float) -> None:
    with pytest.raises(ValueError, match="itude must be within"):
        Point(lat, lon)


def test_a_point_decoded_out_of_range_is_a_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"lat": 95, "lon": 0}', type=Point)


def test_paris_to_london_is_about_344_km_on_the_ellipsoid() -> None:
    assert geodesic_km(PARIS, LONDON) == pytest.approx(343.9, abs=0.5)


@given(points, points)
def test_haversine_stays_within_its_stated_error_of_the_geodesic(a: Point, b: Point) -> None:
    """The tolerance pruning relies on: |haversine / geodesic - 1| <= 0.6 %."""
    exact = geodesic_km(a, b)
    rough = float(haversine_km(a.lat, a.lon, b.lat, b.lon))
    assert abs(rough - exact) <= HAVERSINE_MAX_RELATIVE_ERROR * exact + 1e-9


def test_haversine_is_vectorised_and_broadcasts() -> None:
    lats = np.array([PARIS.lat, LONDON.lat, 0.0])
    lons = np.array([PARIS.lon, LONDON.lon, 0.0])
    distances = haversine_km(PARIS.lat, PARIS.lon, lats, lons)
    assert distances.shape == (3,)
    assert distances[0] == 0.0
    assert distances[1] == pytest.approx(geodesic_km(PARIS, LONDON), rel=0.006)


def test_antipodal_points_are_half_the_circumference_apart_not_nan() -> None:
    assert float(haversine_km(0, 0, 0, 180)) == pytest.approx(math.pi * 6371.0088)


@pytest.mark.parametrize(
    ("b", "expected"),
    [(Point(1, 0), 0.0), (Point(0, 1), 90.0), (Point(-1, 0), 180.0), (Point(0, -1), 270.0)],
)
def test_bearings_from_the_origin_point_the_compass_way(b: Point, expected: float) -> None:
    assert bearing_deg(Point(0, 0), b) == pytest.approx(expected)


def test_a_bearing_a_hair_west_of_north_is_north_not_360() -> None:
    assert bearing_deg(Point(0, 0), Point(1, -1e-20)) == 0.0


@given(points, points)
def test_a_bearing_is_within_0_and_360(a: Point, b: Point) -> None:
    assert 0.0 <= bearing_deg(a, b) < 360.0


@given(st.floats(-720, 720), st.floats(-720, 720))
def test_the_angle_between_bearings_is_within_0_and_180_and_symmetric(x: float, y: float) -> None:
    angle = angle_between_deg(x, y)
    assert 0.0 <= angle <= 180.0
    assert angle == pytest.approx(angle_between_deg(y, x))


def test_the_angle_between_bearings_wraps_around_north() -> None:
    assert angle_between_deg(350.0, 10.0) == pytest.approx(20.0)


def test_the_midpoint_is_halfway_along_the_great_circle() -> None:
    middle = intermediate_point(PARIS, LONDON, 0.5)
    whole = float(haversine_km(PARIS.lat, PARIS.lon, LONDON.lat, LONDON.lon))
    half = float(haversine_km(PARIS.lat, PARIS.lon, middle.lat, middle.lon))
    assert half == pytest.approx(whole / 2, rel=1e-9)


def test_the_estimating_router_is_geodesic_times_circuity_at_the_average_speed() -> None:
    router = EstimatingRouter(average_speed_kmh=60.0, circuity_factor=1.3)
    assert router.distance_km(PARIS, LONDON) == pytest.approx(geodesic_km(PARIS, LONDON) * 1.3)
    assert router.duration_s(PARIS, LONDON) == pytest.approx(
        router.distance_km(PARIS, LONDON) / 60.0 * 3600.0
    )
    assert min_circuity(router) == 1.3


def test_a_router_that_says_nothing_of_its_circuity_is_taken_as_at_least_the_geodesic() -> None:
    class Straight:
        def distance_km(self, a: Point, b: Point) -> float:
            return geodesic_km(a, b)

        def duration_s(self, a: Point, b: Point) -> float:
            return 0.0

    assert min_circuity(Straight()) == 1.0


@pytest.mark.parametrize(
    "values",
    [{"average_speed_kmh": 0.0}, {"average_speed_kmh": 50.0, "circuity_factor": 0.9}],
)
def test_an_estimating_router_with_impossible_settings_is_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be within"):
        EstimatingRouter(**values)


@given(a=points, b=points)
def test_the_great_circle_from_unit_vectors_is_the_haversine(a: Point, b: Point) -> None:
    lats, lons = np.array([a.lat, a.lat]), np.array([a.lon, a.lon])
    other = unit_vectors(np.array([b.lat, a.lat]), np.array([b.lon, a.lon]))
    chords = great_circle_from_chords_km(unit_vectors(lats, lons), other)
    assert chords[0] == pytest.approx(float(haversine_km(a.lat, a.lon, b.lat, b.lon)), abs=1e-9)
    assert chords[1] == 0.0  # a point to itself


def test_the_great_circle_from_unit_vectors_of_antipodes_is_half_the_circumference() -> None:
    a = unit_vectors(np.array([0.0, 90.0]), np.array([0.0, 0.0]))
    b = unit_vectors(np.array([0.0, -90.0]), np.array([180.0, 0.0]))
    assert great_circle_from_chords_km(a, b).tolist() == pytest.approx([math.pi * 6371.0088] * 2)


def test_a_router_on_the_sphere_measures_unit_vectors_as_it_measures_degrees() -> None:
    sphere = EstimatingRouter(average_speed_kmh=80.0, earth=Earth.SPHERE)
    measure = chord_measure(sphere)
    assert measure is not None
    rng = np.random.default_rng(3)
    a_lats, b_lats = rng.uniform(20, 45, 50), rng.uniform(20, 45, 50)
    a_lons, b_lons = rng.uniform(100, 125, 50), rng.uniform(100, 125, 50)
    km, seconds = measure(unit_vectors(a_lats, a_lons), unit_vectors(b_lats, b_lons))
    expected_km, expected_s = measure_legs(sphere, a_lats, a_lons, b_lats, b_lons)
    np.testing.assert_allclose(km, expected_km, rtol=1e-12)
    np.testing.assert_allclose(seconds, expected_s, rtol=1e-12)
    ellipsoid = EstimatingRouter(average_speed_kmh=80.0)
    assert chord_measure(ellipsoid) is None  # the geodesic has no such shortcut
    with pytest.raises(ValueError, match="sphere"):
        ellipsoid.measure_chords(unit_vectors(a_lats, a_lons), unit_vectors(b_lats, b_lons))

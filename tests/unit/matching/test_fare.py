"""Fares: price per km x the rider's own road distance, rounded once; splits sum to the whole."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matching.fare import allocate_minor, fare_minor, settle_fares, settle_match
from matching.geometry import Point
from matching.routing import EstimatingRouter
from payments.money import BASIS_POINTS, fee_minor, split_evenly

fares = st.lists(st.integers(0, 10**9), min_size=1, max_size=8)
rates = st.integers(0, BASIS_POINTS)


def test_a_fare_is_the_price_per_km_times_the_riders_own_road_distance() -> None:
    router = EstimatingRouter(average_speed_kmh=40.0)
    pickup, dropoff = Point(31.2304, 121.4737), Point(31.1443, 121.8083)
    direct_km = router.distance_km(pickup, dropoff)
    expected = Decimal(150) * Decimal(direct_km)
    fare = fare_minor(price_per_km_minor=150, direct_km=direct_km)
    assert fare == int(expected.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    assert fare_minor(price_per_km_minor=150, direct_km=direct_km, seats=3) == int(
        (expected * 3).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    )


@pytest.mark.parametrize(
    ("price", "km", "expected"),
    [(100, 2.125, 212), (100, 2.135, 213), (1, 0.5, 0), (1, 1.5, 2), (1, 2.5, 2), (0, 99.0, 0)],
)
def test_a_fare_rounds_once_half_even(price: int, km: float, expected: int) -> None:
    """2.125 and 2.135 are not exact in binary: 212.49999... and 213.49999...; halves go even."""
    assert fare_minor(price_per_km_minor=price, direct_km=km) == expected


def test_a_fare_is_rounded_once_not_per_seat() -> None:
    # 0.5 a seat would round to 0 each (half-even), 1.5 for three seats rounds to 2.
    assert fare_minor(price_per_km_minor=1, direct_km=0.5, seats=3) == 2


@pytest.mark.parametrize(
    "values",
    [
        {"price_per_km_minor": -1, "direct_km": 1.0},
        {"price_per_km_minor": 1, "direct_km": float("nan")},
        {"price_per_km_minor": 1, "direct_km": -0.1},
        {"price_per_km_minor": 1, "direct_km": 1.0, "seats": 0},
        {"price_per_km_minor": 10**12, "direct_km": 2.0},
    ],
)
def test_an_impossible_fare_is_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be|the price|exceeds"):
        fare_minor(**values)  # type: ignore[arg-type]


@given(fares, rates)
def test_fares_settled_together_split_to_the_whole(fares_minor: list[int], rate: int) -> None:
    settled = settle_fares(fares_minor, platform_fee_bps=rate)
    assert settled.total_minor == sum(fares_minor)
    assert settled.fee_minor == fee_minor(settled.total_minor, rate)
    assert settled.fee_minor + settled.payout_minor == settled.total_minor
    assert sum(settled.fee_shares_minor) == settled.fee_minor
    assert sum(settled.payouts_minor) == settled.payout_minor
    for fare, share, payout in zip(
        fares_minor, settled.fee_shares_minor, settled.payouts_minor, strict=True
    ):
        assert 0 <= share <= fare
        assert share + payout == fare


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**6), min_size=1, max_size=10))
def test_an_allocation_sums_to_the_whole_and_each_part_is_within_one_of_its_share(
    amount: int, weights: list[int]
) -> None:
    parts = allocate_minor(amount, weights)
    assert sum(parts) == amount
    if sum(weights):
        for part, weight in zip(parts, weights, strict=True):
            share = Fraction(amount * weight, sum(weights))
            assert share - 1 < part < share + 1


@given(st.integers(0, 10**12), st.integers(1, 10), st.integers(1, 10**6))
def test_equal_weights_split_like_split_evenly(amount: int, parts: int, weight: int) -> None:
    assert allocate_minor(amount, [weight] * parts) == split_evenly(amount, parts)


def test_a_single_match_pays_the_driver_its_fare_less_the_fee() -> None:
    settled = settle_match(12_345, platform_fee_bps=1_000)
    assert (settled.fee_minor, settled.payout_minor) == (1_234, 11_111)  # 1,234.5 -> even


def test_the_fee_on_the_total_is_shared_by_fare_size() -> None:
    settled = settle_fares([1_000, 3_000], platform_fee_bps=1_250)
    assert settled.fee_minor == 500
    assert settled.fee_shares_minor == (125, 375)
    assert settled.payouts_minor == (875, 2_625)

"""Tier pricing of a group-buy pool: pure, no I/O."""

from __future__ import annotations

from fractions import Fraction

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from groupbuy.pricing import (
    MAX_TIERS,
    NextTier,
    Settlement,
    Tier,
    captures,
    charge_minor,
    hold_minor,
    next_tier,
    premium_minor,
    settlement,
    tier_errors,
    unit_price,
)
from payments.money import BASIS_POINTS, MAX_AMOUNT_MINOR

TOO_MANY_TIERS = f"a pool has 1 to {MAX_TIERS} tiers"
FIRST_NOT_AT_ONE = "the first tier starts at quantity 1"
NOT_RISING = "tier quantities must be strictly rising"
NOT_FALLING = "tier unit prices must be strictly falling"
NOT_POSITIVE = "unit prices are positive"
BAD_BOUNDS = "min_quantity must be between 1 and max_quantity"
UNREACHABLE = "every tier must be reachable within max_quantity"
TOO_VALUABLE = "the pool's full value exceeds the largest amount copool moves"

#: 10.00 from one, 9.00 from ten, 7.50 from fifty.
TIERS = [Tier(1, 1_000), Tier(10, 900), Tier(50, 750)]

basis_points = st.integers(0, BASIS_POINTS)


class Pool(msgspec.Struct, frozen=True):
    """Valid tiers with the bounds of a pool that can use them."""

    tiers: list[Tier]
    min_quantity: int
    max_quantity: int


@st.composite
def pools(draw: st.DrawFn) -> Pool:
    """Any valid pool: 1..10 tiers, the first at 1, quantities strictly rising, prices strictly
    falling and positive, every tier reachable, the full value within MAX_AMOUNT_MINOR."""
    count = draw(st.integers(1, MAX_TIERS))
    higher = draw(
        st.lists(st.integers(2, 10_000), min_size=count - 1, max_size=count - 1, unique=True)
    )
    quantities = [1, *sorted(higher)]
    prices = sorted(
        draw(st.lists(st.integers(1, 10**8), min_size=count, max_size=count, unique=True)),
        reverse=True,
    )
    tiers = [Tier(q, p) for q, p in zip(quantities, prices, strict=True)]
    largest = min(MAX_AMOUNT_MINOR // prices[0], quantities[-1] + 10_000)
    max_quantity = draw(st.integers(quantities[-1], largest))
    min_quantity = draw(st.integers(1, max_quantity))
    return Pool(tiers=tiers, min_quantity=min_quantity, max_quantity=max_quantity)


def errors_of(pool: Pool, tiers: list[Tier] | None = None, **bounds: int) -> list[str]:
    return tier_errors(
        pool.tiers if tiers is None else tiers,
        min_quantity=bounds.get("min_quantity", pool.min_quantity),
        max_quantity=bounds.get("max_quantity", pool.max_quantity),
    )


def half_even(amount_minor: int, rate_bp: int) -> int:
    """An oracle independent of payments.money: Python rounds a Fraction half to even."""
    return round(Fraction(amount_minor * rate_bp, BASIS_POINTS))


# Examples


@pytest.mark.parametrize(
    ("committed", "price"),
    [(0, 1_000), (1, 1_000), (9, 1_000), (10, 900), (49, 900), (50, 750), (10_000, 750)],
)
def test_the_unit_price_is_that_of_the_highest_tier_reached(committed: int, price: int) -> None:
    assert unit_price(TIERS, committed) == price


def test_the_next_tier_says_how_many_more_units_reach_the_cheaper_price() -> None:
    assert next_tier(TIERS, 0) == NextTier(
        min_quantity=10, unit_price_minor=900, quantity_needed=10
    )
    assert next_tier(TIERS, 9) == NextTier(min_quantity=10, unit_price_minor=900, quantity_needed=1)
    assert next_tier(TIERS, 10) == NextTier(
        min_quantity=50, unit_price_minor=750, quantity_needed=40
    )
    assert next_tier(TIERS, 50) is None
    assert next_tier(TIERS, 51) is None


def test_a_single_tier_pool_has_no_next_tier_even_before_anyone_joins() -> None:
    assert next_tier([Tier(1, 500)], 0) is None


def test_a_join_holds_the_first_tier_price_and_is_charged_the_final_one_premium_included() -> None:
    assert hold_minor(TIERS, 3) == 3_000
    assert hold_minor(TIERS, 3, premium_bp=150) == 3_045
    assert charge_minor(750, 3) == 2_250
    assert charge_minor(750, 3, premium_bp=150) == 2_284  # 2250 + 33.75 -> 34
    assert premium_minor(750, 3, 150) == 34


def test_premium_ties_round_half_to_even() -> None:
    assert premium_minor(50, 1, 100) == 0  # 0.5 -> 0
    assert premium_minor(150, 1, 100) == 2  # 1.5 -> 2
    assert charge_minor(50, 1, premium_bp=100) == 50
    assert hold_minor([Tier(1, 150)], 1, premium_bp=100) == 152


def test_settlement_charges_everyone_the_final_price_and_pays_the_organizer_the_rest() -> None:
    assert settlement(TIERS, 60, platform_fee_bp=250) == Settlement(
        unit_price_minor=750, total_minor=45_000, fee_minor=1_125, payout_minor=43_875
    )


@pytest.mark.parametrize(("committed", "fee"), [(1, 0), (3, 2), (5, 2), (7, 4)])
def test_the_settlement_fee_rounds_ties_half_to_even(committed: int, fee: int) -> None:
    # 100 x committed at 50 bp is exactly 0.5, 1.5, 2.5, 3.5.
    totals = settlement([Tier(1, 100)], committed, platform_fee_bp=50)
    assert totals.fee_minor == fee
    assert totals.payout_minor == 100 * committed - fee


def test_the_example_tiers_make_a_valid_pool() -> None:
    assert tier_errors(TIERS, min_quantity=20, max_quantity=100) == []


@pytest.mark.parametrize(
    ("tiers", "min_quantity", "max_quantity", "errors"),
    [
        ([], 1, 10, [TOO_MANY_TIERS]),
        ([Tier(q, 1_000 - q) for q in range(1, 12)], 1, 20, [TOO_MANY_TIERS]),
        ([Tier(2, 1_000), Tier(10, 900)], 1, 10, [FIRST_NOT_AT_ONE]),
        ([Tier(0, 1_000), Tier(10, 900)], 1, 10, [FIRST_NOT_AT_ONE]),
        ([Tier(1, 1_000), Tier(10, 900), Tier(10, 800)], 1, 10, [NOT_RISING]),
        ([Tier(1, 1_000), Tier(10, 900), Tier(5, 800)], 1, 10, [NOT_RISING]),
        ([Tier(1, 1_000), Tier(10, 1_000)], 1, 10, [NOT_FALLING]),
        ([Tier(1, 1_000), Tier(10, 1_100)], 1, 10, [NOT_FALLING]),
        ([Tier(1, 1_000), Tier(10, 0)], 1, 10, [NOT_POSITIVE]),
        ([Tier(1, 0)], 1, 10, [NOT_POSITIVE]),
        (TIERS, 101, 100, [BAD_BOUNDS]),
        (TIERS, 0, 100, [BAD_BOUNDS]),
        (TIERS, 1, 49, [UNREACHABLE]),
        ([Tier(1, 10**6)], 1, 10**6, []),
        ([Tier(1, 10**6)], 1, 10**6 + 1, [TOO_VALUABLE]),
        ([Tier(1, MAX_AMOUNT_MINOR)], 1, 1, []),
        ([Tier(1, MAX_AMOUNT_MINOR + 1)], 1, 1, [TOO_VALUABLE]),
        (
            [Tier(2, MAX_AMOUNT_MINOR + 1), Tier(2, MAX_AMOUNT_MINOR + 1), Tier(3, 0)],
            5,
            1,
            [
                FIRST_NOT_AT_ONE,
                NOT_RISING,
                NOT_FALLING,
                NOT_POSITIVE,
                BAD_BOUNDS,
                UNREACHABLE,
                TOO_VALUABLE,
            ],
        ),
    ],
)
def test_tier_errors_name_each_defect_once(
    tiers: list[Tier], min_quantity: int, max_quantity: int, errors: list[str]
) -> None:
    assert tier_errors(tiers, min_quantity=min_quantity, max_quantity=max_quantity) == errors


# Properties


@given(pools(), st.integers(0, 20_000), st.integers(0, 20_000))
def test_the_unit_price_never_rises_as_the_committed_quantity_grows(
    pool: Pool, some: int, more: int
) -> None:
    fewer, greater = sorted((some, more))
    assert unit_price(pool.tiers, greater) <= unit_price(pool.tiers, fewer)
    assert unit_price(pool.tiers, greater + 1) <= unit_price(pool.tiers, greater)


@given(pools())
def test_the_unit_price_at_a_tier_threshold_is_that_tiers_price_until_the_next(
    pool: Pool,
) -> None:
    for index, tier in enumerate(pool.tiers):
        assert unit_price(pool.tiers, tier.min_quantity) == tier.unit_price_minor
        if index + 1 < len(pool.tiers):
            last_unit = pool.tiers[index + 1].min_quantity - 1
            assert unit_price(pool.tiers, last_unit) == tier.unit_price_minor
    assert unit_price(pool.tiers, 0) == pool.tiers[0].unit_price_minor


@given(pools(), st.integers(0, 20_000))
def test_there_is_no_next_tier_exactly_once_the_last_tier_is_reached(
    pool: Pool, committed: int
) -> None:
    upcoming = next_tier(pool.tiers, committed)
    # The first tier's price holds from zero, so a one-tier pool is at its last tier from zero.
    last_reached = committed >= pool.tiers[-1].min_quantity or len(pool.tiers) == 1
    assert last_reached == (unit_price(pool.tiers, committed) == pool.tiers[-1].unit_price_minor)
    assert (upcoming is None) == last_reached
    if upcoming is not None:
        current = unit_price(pool.tiers, committed)
        assert upcoming.quantity_needed > 0
        assert upcoming.unit_price_minor < current
        assert upcoming.min_quantity == committed + upcoming.quantity_needed
        assert Tier(upcoming.min_quantity, upcoming.unit_price_minor) in pool.tiers
        # It is the very next price: one unit short of it the price is still the current one.
        assert unit_price(pool.tiers, upcoming.min_quantity) == upcoming.unit_price_minor
        assert unit_price(pool.tiers, upcoming.min_quantity - 1) == current


@given(pools(), st.data(), basis_points)
def test_a_joins_charge_at_any_reachable_final_price_never_exceeds_its_hold(
    pool: Pool, data: st.DataObject, premium_bp: int
) -> None:
    quantity = data.draw(st.integers(1, pool.max_quantity), label="quantity")
    committed = data.draw(st.integers(quantity, pool.max_quantity), label="committed")
    final = unit_price(pool.tiers, committed)
    for bp in (0, premium_bp):
        hold = hold_minor(pool.tiers, quantity, premium_bp=bp)
        charge = charge_minor(final, quantity, premium_bp=bp)
        assert 0 < charge <= hold
        assert hold == charge_minor(pool.tiers[0].unit_price_minor, quantity, premium_bp=bp)
    assert hold_minor(pool.tiers, quantity) == hold_minor(pool.tiers, quantity, premium_bp=0)


@given(pools(), st.data(), basis_points)
def test_every_tier_price_charges_no_more_than_the_hold(
    pool: Pool, data: st.DataObject, premium_bp: int
) -> None:
    quantity = data.draw(st.integers(1, pool.max_quantity), label="quantity")
    hold = hold_minor(pool.tiers, quantity, premium_bp=premium_bp)
    for tier in pool.tiers:
        assert charge_minor(tier.unit_price_minor, quantity, premium_bp=premium_bp) <= hold


@given(st.integers(1, 10**8), st.integers(1, 10_000), basis_points)
def test_a_charge_is_the_goods_plus_the_half_even_premium(
    price: int, quantity: int, premium_bp: int
) -> None:
    premium = premium_minor(price, quantity, premium_bp)
    assert premium == half_even(price * quantity, premium_bp)
    assert charge_minor(price, quantity, premium_bp=premium_bp) == price * quantity + premium


@given(pools(), st.data(), basis_points)
def test_settlement_fee_and_payout_sum_to_the_final_price_times_the_committed_quantity(
    pool: Pool, data: st.DataObject, platform_fee_bp: int
) -> None:
    committed = data.draw(st.integers(0, pool.max_quantity), label="committed")
    totals = settlement(pool.tiers, committed, platform_fee_bp=platform_fee_bp)
    assert totals.unit_price_minor == unit_price(pool.tiers, committed)
    assert totals.total_minor == totals.unit_price_minor * committed
    assert totals.total_minor <= MAX_AMOUNT_MINOR
    assert totals.fee_minor == half_even(totals.total_minor, platform_fee_bp)
    assert totals.fee_minor + totals.payout_minor == totals.total_minor
    assert 0 <= totals.fee_minor <= totals.total_minor


@given(pools())
def test_generated_valid_tiers_have_no_errors(pool: Pool) -> None:
    assert errors_of(pool) == []


@given(pools(), st.integers(-5, 0) | st.integers(2, 10_000))
def test_a_first_tier_not_at_one_is_named(pool: Pool, start: int) -> None:
    if len(pool.tiers) > 1:
        assume(start < pool.tiers[1].min_quantity)
    assume(start <= pool.max_quantity)
    tiers = [Tier(start, pool.tiers[0].unit_price_minor), *pool.tiers[1:]]
    assert errors_of(pool, tiers) == [FIRST_NOT_AT_ONE]


@given(pools(), st.data())
def test_tier_quantities_that_do_not_rise_are_named(pool: Pool, data: st.DataObject) -> None:
    assume(len(pool.tiers) >= 2)
    index = data.draw(st.integers(1, len(pool.tiers) - 1), label="index")
    previous = pool.tiers[index - 1].min_quantity
    quantity = data.draw(st.integers(1, previous), label="quantity")
    tiers = list(pool.tiers)
    tiers[index] = Tier(quantity, tiers[index].unit_price_minor)
    assert errors_of(pool, tiers) == [NOT_RISING]


@given(pools(), st.data())
def test_tier_prices_that_do_not_fall_are_named(pool: Pool, data: st.DataObject) -> None:
    assume(len(pool.tiers) >= 2)
    index = data.draw(st.integers(1, len(pool.tiers) - 1), label="index")
    previous = pool.tiers[index - 1].unit_price_minor
    price = data.draw(st.integers(previous, previous + 1_000), label="price")
    if index + 1 < len(pool.tiers):
        assume(price > pool.tiers[index + 1].unit_price_minor)
    tiers = list(pool.tiers)
    tiers[index] = Tier(tiers[index].min_quantity, price)
    assert errors_of(pool, tiers) == [NOT_FALLING]


@given(st.integers(MAX_TIERS + 1, 3 * MAX_TIERS))
def test_more_than_ten_tiers_are_named(count: int) -> None:
    tiers = [Tier(q, 10_000 - q) for q in range(1, count + 1)]
    assert tier_errors(tiers, min_quantity=1, max_quantity=count) == [TOO_MANY_TIERS]


@given(pools(), st.integers(1, 1_000))
def test_a_min_quantity_above_the_max_quantity_is_named(pool: Pool, excess: int) -> None:
    assert errors_of(pool, min_quantity=pool.max_quantity + excess) == [BAD_BOUNDS]


@given(pools(), st.data())
def test_a_last_tier_beyond_the_max_quantity_is_named(pool: Pool, data: st.DataObject) -> None:
    last = pool.tiers[-1].min_quantity
    assume(last >= 2)
    max_quantity = data.draw(st.integers(1, last - 1), label="max_quantity")
    assert errors_of(pool, min_quantity=1, max_quantity=max_quantity) == [UNREACHABLE]


@given(pools(), st.integers(1, 10**6))
def test_a_full_value_above_the_largest_amount_is_named(pool: Pool, excess: int) -> None:
    first_price = pool.tiers[0].unit_price_minor
    max_quantity = MAX_AMOUNT_MINOR // first_price + excess
    assert max_quantity * first_price > MAX_AMOUNT_MINOR
    assert errors_of(pool, max_quantity=max_quantity) == [TOO_VALUABLE]


@given(st.integers(1, 1_000), st.integers(1, 10_000))
def test_a_protected_pools_full_value_counts_its_premium(premium_bp: int, quantity: int) -> None:
    # The largest price whose full value alone fits: with the premium its holds would not.
    price = MAX_AMOUNT_MINOR // quantity
    tiers = [Tier(1, price)]
    assume(hold_minor(tiers, quantity, premium_bp=premium_bp) > MAX_AMOUNT_MINOR)
    assert tier_errors(tiers, min_quantity=1, max_quantity=quantity) == []
    assert tier_errors(tiers, min_quantity=1, max_quantity=quantity, premium_bp=premium_bp) == [
        TOO_VALUABLE
    ]
    # Whatever it accepts, a join of the whole pool can hold.
    fitting = [Tier(1, price // 2)]
    if not tier_errors(fitting, min_quantity=1, max_quantity=quantity, premium_bp=premium_bp):
        assert hold_minor(fitting, quantity, premium_bp=premium_bp) <= MAX_AMOUNT_MINOR


@given(
    held=st.lists(st.integers(1, 10**9), min_size=1, max_size=8),
    share=st.floats(0, 1),
)
def test_a_charge_is_captured_from_a_joins_holds_oldest_first(
    held: list[int], share: float
) -> None:
    charge = int(sum(held) * share)
    taken = captures(held, charge)
    assert sum(taken) == charge
    assert all(0 <= part <= amount for part, amount in zip(taken, held, strict=True))
    # Oldest first: a hold is touched only once every older one is taken in full.
    for k, part in enumerate(taken):
        if part:
            assert taken[:k] == held[:k]


def test_holds_that_do_not_cover_the_charge_are_refused() -> None:
    with pytest.raises(ValueError, match="cover"):
        captures([100, 200], 301)
    assert captures([100, 200], 150) == [100, 50]

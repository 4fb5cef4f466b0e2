"""Money arithmetic and the chain's hashing: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.chain import GENESIS_HASH, ChainEntry, entry_hash, epoch_us, first_broken_link
from payments.money import fee_minor, is_supported_currency, minor_unit_exponent, split_evenly


@given(st.integers(0, 10**12), st.integers(1, 1000))
def test_a_split_sums_exactly_to_the_whole_with_the_remainder_first(
    amount: int, parts: int
) -> None:
    shares = split_evenly(amount, parts)
    assert sum(shares) == amount
    assert len(shares) == parts
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)


@given(st.integers(0, 10**12), st.integers(0, 10_000))
def test_a_fee_is_the_half_even_rounding_of_the_exact_product(amount: int, bps: int) -> None:
    fee = fee_minor(amount, bps)
    exact_times_10000 = amount * bps
    assert abs(fee * 10_000 - exact_times_10000) <= 5_000
    assert 0 <= fee <= amount


def test_fee_ties_round_to_even() -> None:
    assert fee_minor(25, 1_000) == 2  # 2.5 -> 2
    assert fee_minor(35, 1_000) == 4  # 3.5 -> 4
    with pytest.raises(ValueError, match="rate"):
        fee_minor(100, 10_001)


@pytest.mark.parametrize(("code", "exponent"), [("CNY", 2), ("JPY", 0), ("BHD", 3), ("EUR", 2)])
def test_active_currencies_carry_their_iso_minor_unit_exponent(code: str, exponent: int) -> None:
    assert is_supported_currency(code)
    assert minor_unit_exponent(code) == exponent


@pytest.mark.parametrize(
    "code", ["XAU", "XAG", "XTS", "XXX", "XDR", "CLF", "BOV", "DEM", "eur", ""]
)
def test_metals_funds_test_codes_and_withdrawn_currencies_are_refused(code: str) -> None:
    assert not is_supported_currency(code)
    with pytest.raises(KeyError):
        minor_unit_exponent(code)


def _entry(seq: int, amount: int = 100) -> ChainEntry:
    return ChainEntry(
        seq=seq,
        id=f"t{seq}",
        debit_account_id=1,
        credit_account_id=2,
        amount_minor=amount,
        currency="EUR",
        kind="top_up",
        ref="r",
        status="posted",
        parent_id=None,
        created_at_us=epoch_us(datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)),
    )


def _chain(n: int) -> list[tuple[ChainEntry, str]]:
    links, previous = [], GENESIS_HASH
    for seq in range(1, n + 1):
        previous = entry_hash(previous, _entry(seq))
        links.append((_entry(seq), previous))
    return links


def test_an_intact_chain_verifies() -> None:
    assert first_broken_link(_chain(5)) is None


def test_a_changed_amount_is_found_at_its_entry() -> None:
    links = _chain(5)
    links[2] = (_entry(3, amount=101), links[2][1])
    assert first_broken_link(links) == (3, first_broken_link(links)[1])  # type: ignore[index]
    assert "hash mismatch" in first_broken_link(links)[1]  # type: ignore[index]


def test_a_missing_entry_is_a_sequence_gap() -> None:
    links = _chain(5)
    del links[1]
    broken = first_broken_link(links)
    assert broken is not None
    assert broken[0] == 3
    assert "gap" in broken[1]


def test_epoch_microseconds_are_exact() -> None:
    moment = datetime(2026, 11, 23, 4, 35, 0, 999999, tzinfo=UTC)
    assert epoch_us(moment) == int(moment.timestamp()) * 1_000_000 + 999_999

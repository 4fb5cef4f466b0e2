"""Money arithmetic: integer minor units, one rounding rule (half-even), exact splits."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType

import iso4217


def _active_currencies() -> MappingProxyType[str, int]:
    """Every active ISO 4217 currency with its minor-unit exponent, from the ISO list one.

    Left out: codes with no minor unit (precious metals, SDR, the test and "no currency" codes,
    bond market units) and the fund codes ISO marks `IsFund` (BOV, CLF, COU, MXV, ...).
    """
    funds = {
        code.text.strip()
        for entry in iso4217.raw_xml.iter("CcyNtry")
        if (name := entry.find("CcyNm")) is not None
        and name.get("IsFund") == "true"
        and (code := entry.find("Ccy")) is not None
        and code.text
    }
    return MappingProxyType(
        {
            currency.code: currency.exponent
            for currency in iso4217.Currency
            if currency.exponent is not None and currency.code not in funds
        }
    )


#: ISO 4217 currencies copool accepts, with their minor-unit exponent (CNY 2, JPY 0, BHD 3).
CURRENCIES = _active_currencies()
#: No single amount may exceed this (10 billion major units at two decimals).
MAX_AMOUNT_MINOR = 10**12
BASIS_POINTS = 10_000


def is_supported_currency(currency: str) -> bool:
    return currency in CURRENCIES


def minor_unit_exponent(currency: str) -> int:
    """How many decimals the currency's minor unit has (CNY 2, JPY 0); KeyError if unknown."""
    return CURRENCIES[currency]


def fee_minor(amount_minor: int, rate_bps: int) -> int:
    """amount x rate (in basis points), rounded half-even to a whole minor unit."""
    if amount_minor < 0 or not 0 <= rate_bps <= BASIS_POINTS:
        raise ValueError("amount must be >= 0 and the rate within 0..10000 bps")
    exact = Decimal(amount_minor) * rate_bps / BASIS_POINTS
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def split_evenly(amount_minor: int, parts: int) -> list[int]:
    """Split into `parts` shares that sum exactly to the whole; the remainder goes first."""
    if parts <= 0 or amount_minor < 0:
        raise ValueError("parts must be positive and the amount non-negative")
    share, remainder = divmod(amount_minor, parts)
    return [share + 1 if i < remainder else share for i in range(parts)]

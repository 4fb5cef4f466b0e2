"""Money arithmetic: integer minor units, one rounding rule (half-even), exact splits."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

#: ISO 4217 currencies copool accepts, with their minor-unit exponent.
CURRENCIES: dict[str, int] = {
    "EUR": 2,
    "USD": 2,
    "GBP": 2,
    "CHF": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CZK": 2,
    "CAD": 2,
    "AUD": 2,
    "JPY": 0,
}
#: No single amount may exceed this (10 billion major units at two decimals).
MAX_AMOUNT_MINOR = 10**12
BASIS_POINTS = 10_000


def is_supported_currency(currency: str) -> bool:
    return currency in CURRENCIES


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

"""A rider's fare and how a trip's fares split between the driver and the platform (pure).

Money is integer minor units (payments/money.py). A fare is price_per_km_minor x the rider's own
direct road distance (the Router's, not the detoured route the driver drives) x seats, rounded
once, half-even, like every amount the ledger computes. Splits are exact: the parts of any whole
sum to it, to the minor unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from matching.feasibility import MAX_SEATS
from payments.money import MAX_AMOUNT_MINOR, fee_minor, split_evenly


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    """The money of fares settled together: riders pay total_minor; the platform takes fee_minor
    (fee_shares_minor: each fare's part of it, by fare); the driver gets payout_minor."""

    fares_minor: tuple[int, ...]
    total_minor: int
    fee_minor: int
    payout_minor: int
    fee_shares_minor: tuple[int, ...]

    @property
    def payouts_minor(self) -> tuple[int, ...]:
        """What the driver gets from each fare; they sum to payout_minor."""
        return tuple(f - s for f, s in zip(self.fares_minor, self.fee_shares_minor, strict=True))


def fare_minor(*, price_per_km_minor: int, direct_km: float, seats: int = 1) -> int:
    """price_per_km_minor x direct_km x seats, rounded once half-even to a whole minor unit.

    direct_km: the rider's own road distance pickup -> drop-off, as the Router answers it."""
    if price_per_km_minor < 0 or not 1 <= seats <= MAX_SEATS:
        raise ValueError(f"the price is >= 0 and the seats within 1..{MAX_SEATS}")
    if not (math.isfinite(direct_km) and direct_km >= 0):
        raise ValueError("direct_km must be finite and >= 0")
    # Decimal(float) is the float's exact value: the one rounding is the quantize below.
    exact = Decimal(price_per_km_minor) * Decimal(direct_km) * seats
    fare = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if fare > MAX_AMOUNT_MINOR:
        raise ValueError("the fare exceeds the largest amount copool moves")
    return fare


def allocate_minor(amount_minor: int, weights: Sequence[int]) -> list[int]:
    """Split amount_minor in proportion to integer weights, exactly: each part is the floor of
    its share, and the units left over go to the largest remainders (ties: the earlier part).
    Equal weights split as `split_evenly` does; all-zero weights split evenly."""
    if amount_minor < 0 or not weights or any(w < 0 for w in weights):
        raise ValueError("a non-negative amount over one or more non-negative weights")
    whole = sum(weights)
    if whole == 0:
        return split_evenly(amount_minor, len(weights))
    parts, remainders = [], []
    for weight in weights:
        part, remainder = divmod(amount_minor * weight, whole)
        parts.append(part)
        remainders.append(remainder)
    left = amount_minor - sum(parts)
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        parts[i] += 1
    return parts


def settle_match(fare_minor: int, *, platform_fee_bps: int) -> Settlement:
    """One rider's fare settled alone: the platform fee on it (the ledger's half-even rule)."""
    return settle_fares([fare_minor], platform_fee_bps=platform_fee_bps)


def settle_fares(fares_minor: Sequence[int], *, platform_fee_bps: int) -> Settlement:
    """Several riders' fares settled together: one fee on their total, rounded once, shared
    among the fares by size; fee + payout = total and each fare = its fee share + its payout."""
    if not fares_minor or any(f < 0 for f in fares_minor):
        raise ValueError("one or more fares, none negative")
    total = sum(fares_minor)
    if total > MAX_AMOUNT_MINOR:
        raise ValueError("the fares exceed the largest amount copool moves")
    fee = fee_minor(total, platform_fee_bps)
    return Settlement(
        fares_minor=tuple(fares_minor),
        total_minor=total,
        fee_minor=fee,
        payout_minor=total - fee,
        fee_shares_minor=tuple(allocate_minor(fee, fares_minor)),
    )

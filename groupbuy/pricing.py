"""Tier pricing of a pool (pure: plain values in, plain values out).

A pool's tiers are sorted by quantity, the first at 1, unit prices strictly falling. The price
everyone pays is that of the highest tier the pool's committed quantity reached; a join holds
quantity x the first tier's price (the most it can cost) and is charged quantity x the final price.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import msgspec

from payments.money import MAX_AMOUNT_MINOR, fee_minor

MAX_TIERS = 10


class Tier(msgspec.Struct, frozen=True):
    min_quantity: int
    unit_price_minor: int


class NextTier(msgspec.Struct, frozen=True):
    min_quantity: int
    unit_price_minor: int
    #: How many more units the pool needs to reach it.
    quantity_needed: int


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    """The money of a successful pool: members pay `total_minor`, the organizer gets the rest
    after the platform fee; purchase protection premiums go to the insurance fund."""

    unit_price_minor: int
    total_minor: int
    fee_minor: int
    payout_minor: int


def tier_errors(
    tiers: Sequence[Tier], *, min_quantity: int, max_quantity: int, premium_bp: int = 0
) -> list[str]:
    """Why these tiers and bounds cannot make a pool (empty: they can). A pool's full value,
    its protection premium included, is what its joins may hold in all."""
    errors = []
    if not 1 <= len(tiers) <= MAX_TIERS:
        errors.append(f"a pool has 1 to {MAX_TIERS} tiers")
        return errors
    if tiers[0].min_quantity != 1:
        errors.append("the first tier starts at quantity 1")
    for lower, higher in itertools.pairwise(tiers):
        if higher.min_quantity <= lower.min_quantity:
            errors.append("tier quantities must be strictly rising")
        if higher.unit_price_minor >= lower.unit_price_minor:
            errors.append("tier unit prices must be strictly falling")
    if any(t.unit_price_minor <= 0 for t in tiers):
        errors.append("unit prices are positive")
    if not 1 <= min_quantity <= max_quantity:
        errors.append("min_quantity must be between 1 and max_quantity")
    if tiers[-1].min_quantity > max_quantity:
        errors.append("every tier must be reachable within max_quantity")
    value_known = max_quantity >= 1 and tiers[0].unit_price_minor > 0  # (named above if not)
    if value_known and hold_minor(tiers, max_quantity, premium_bp=premium_bp) > MAX_AMOUNT_MINOR:
        errors.append("the pool's full value exceeds the largest amount copool moves")
    return sorted(set(errors), key=errors.index)


def unit_price(tiers: Sequence[Tier], committed_quantity: int) -> int:
    """The unit price at this committed quantity: the highest tier reached (the first if none)."""
    price = tiers[0].unit_price_minor
    for tier in tiers:
        if tier.min_quantity <= committed_quantity:
            price = tier.unit_price_minor
    return price


def next_tier(tiers: Sequence[Tier], committed_quantity: int) -> NextTier | None:
    """The next cheaper tier and how many units it still needs; None once the last is reached.

    The first tier's price holds from zero, so the next tier is always a cheaper one."""
    for tier in tiers[1:]:
        if tier.min_quantity > committed_quantity:
            return NextTier(
                min_quantity=tier.min_quantity,
                unit_price_minor=tier.unit_price_minor,
                quantity_needed=tier.min_quantity - committed_quantity,
            )
    return None


def hold_minor(tiers: Sequence[Tier], quantity: int, *, premium_bp: int = 0) -> int:
    """What a join of `quantity` holds: at the first tier's price, plus the protection premium."""
    base = quantity * tiers[0].unit_price_minor
    return base + fee_minor(base, premium_bp)


def charge_minor(unit_price_minor: int, quantity: int, *, premium_bp: int = 0) -> int:
    """What a join of `quantity` finally pays at the final unit price, premium included."""
    base = quantity * unit_price_minor
    return base + fee_minor(base, premium_bp)


def premium_minor(unit_price_minor: int, quantity: int, premium_bp: int) -> int:
    """The protection premium part of a join's charge."""
    return fee_minor(quantity * unit_price_minor, premium_bp)


def settlement(
    tiers: Sequence[Tier], committed_quantity: int, *, platform_fee_bp: int
) -> Settlement:
    """The totals of a successful pool (premiums are accounted per join, not here)."""
    price = unit_price(tiers, committed_quantity)
    total = price * committed_quantity
    fee = fee_minor(total, platform_fee_bp)
    return Settlement(
        unit_price_minor=price, total_minor=total, fee_minor=fee, payout_minor=total - fee
    )


def captures(held_minor: Sequence[int], charge_minor: int) -> list[int]:
    """What to capture of each of a join's holds (oldest first) to charge `charge_minor`: each
    hold in full until the charge is met, then the part that meets it, then nothing (those
    holds are released). The holds must cover the charge."""
    if charge_minor < 0 or charge_minor > sum(held_minor):
        raise ValueError("the holds do not cover the charge")
    taken = []
    left = charge_minor
    for amount in held_minor:
        part = min(amount, left)
        taken.append(part)
        left -= part
    return taken

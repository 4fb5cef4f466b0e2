"""The trust gate's rules (pure: the service reads the standing and passes it in)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec

from payments.money import fee_minor


class Action(StrEnum):
    JOIN_POOL = "join_pool"
    CREATE_POOL = "create_pool"
    OFFER_RIDE = "offer_ride"
    REQUEST_RIDE = "request_ride"
    ACCEPT_MATCH = "accept_match"
    PAYOUT = "payout"


class Verdict(StrEnum):
    ALLOW = "allow"
    REQUIRE_DEPOSIT = "require_deposit"
    DENY = "deny"


class Reason(StrEnum):
    """Machine-readable reason codes; stable."""

    GOOD_STANDING = "good-standing"
    BANNED = "banned"
    SCORE_BELOW_FLOOR = "score-below-floor"
    NEW_USER_DEPOSIT = "new-user-deposit"
    INSURANCE_REQUIRED = "insurance-required"
    INSURANCE_EXPIRED = "insurance-expired"
    DRIVER_ROLE_REQUIRED = "driver-role-required"
    HIGH_VALUE_POOL = "high-value-pool"
    PURCHASE_PROTECTED = "purchase-protected"


class Standing(msgspec.Struct, frozen=True, kw_only=True):
    """What the gate knows of a user (the service reads it and passes it in)."""

    banned: bool
    score: float
    rating_count: int
    completed_count: int
    is_driver: bool
    #: The expiry of the user's verified policy; None if none was verified.
    insurance_expires_at: datetime | None


class PolicyRules(msgspec.Struct, frozen=True, kw_only=True):
    """The gate's thresholds (built from settings by the app; amounts in minor units)."""

    score_floor: float = 2.5
    score_floor_min_ratings: int = 5
    new_user_completions: int = 3
    new_user_amount_minor: int = 50_000
    new_user_deposit_bp: int = 2_000
    high_value_pool_minor: int = 1_000_000
    organizer_deposit_bp: int = 1_000


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    verdict: Verdict
    deposit_minor: int = 0
    #: Reason values, never empty.
    reasons: list[str]


class RuleRow(msgspec.Struct, frozen=True, kw_only=True):
    """One rule as GET /v1/me/trust and the README's table show it."""

    rule: str
    applies_to: str
    outcome: str


DRIVING = frozenset({Action.OFFER_RIDE, Action.ACCEPT_MATCH})
#: Actions that put a new user's money at stake beyond the threshold.
SPENDING = frozenset(
    {Action.JOIN_POOL, Action.REQUEST_RIDE, Action.CREATE_POOL, Action.ACCEPT_MATCH}
)


def _denials(standing: Standing, action: Action, now: datetime, rules: PolicyRules) -> list[Reason]:
    reasons = []
    if standing.banned:
        reasons.append(Reason.BANNED)
    if (
        standing.rating_count >= rules.score_floor_min_ratings
        and standing.score < rules.score_floor
    ):
        reasons.append(Reason.SCORE_BELOW_FLOOR)
    if action in DRIVING:
        if not standing.is_driver:
            reasons.append(Reason.DRIVER_ROLE_REQUIRED)
        if standing.insurance_expires_at is None:
            reasons.append(Reason.INSURANCE_REQUIRED)
        elif standing.insurance_expires_at <= now:
            reasons.append(Reason.INSURANCE_EXPIRED)
    return reasons


def evaluate(
    standing: Standing,
    action: Action,
    amount_minor: int,
    *,
    now: datetime,
    rules: PolicyRules,
    protected: bool = False,
) -> Decision:
    """allow, require_deposit (amount > 0) or deny, always with at least one reason code."""
    if amount_minor < 0:
        raise ValueError("amount_minor must not be negative")
    denied = _denials(standing, action, now, rules)
    if denied:
        return Decision(verdict=Verdict.DENY, reasons=[r.value for r in denied])
    deposits: list[tuple[int, Reason]] = []
    notes: list[Reason] = []
    if action is Action.CREATE_POOL and amount_minor > rules.high_value_pool_minor:
        if protected:
            notes.append(Reason.PURCHASE_PROTECTED)
        else:
            deposits.append(
                (fee_minor(amount_minor, rules.organizer_deposit_bp), Reason.HIGH_VALUE_POOL)
            )
    if (
        action in SPENDING
        and standing.completed_count < rules.new_user_completions
        and amount_minor > rules.new_user_amount_minor
    ):
        deposits.append(
            (fee_minor(amount_minor, rules.new_user_deposit_bp), Reason.NEW_USER_DEPOSIT)
        )
    # A rule whose deposit rounds to nothing asks for nothing, so it gives no reason either.
    deposits = [(amount, reason) for amount, reason in deposits if amount > 0]
    if deposits:
        return Decision(
            verdict=Verdict.REQUIRE_DEPOSIT,
            deposit_minor=max(amount for amount, _ in deposits),
            reasons=[reason.value for _, reason in deposits] + [n.value for n in notes],
        )
    return Decision(
        verdict=Verdict.ALLOW, reasons=[n.value for n in notes] or [Reason.GOOD_STANDING.value]
    )


def describe(rules: PolicyRules) -> list[RuleRow]:
    """The rules as rows (GET /v1/me/trust shows them; the README has the same table)."""
    driving = ", ".join(sorted(a.value for a in DRIVING))
    spending = ", ".join(sorted(a.value for a in SPENDING))
    return [
        RuleRow(
            rule="the user is banned", applies_to="every action", outcome=f"deny ({Reason.BANNED})"
        ),
        RuleRow(
            rule=f"score below {rules.score_floor} with at least "
            f"{rules.score_floor_min_ratings} ratings",
            applies_to="every action",
            outcome=f"deny ({Reason.SCORE_BELOW_FLOOR})",
        ),
        RuleRow(
            rule="no driver role",
            applies_to=driving,
            outcome=f"deny ({Reason.DRIVER_ROLE_REQUIRED})",
        ),
        RuleRow(
            rule="no verified insurance policy, or it expired",
            applies_to=driving,
            outcome=f"deny ({Reason.INSURANCE_REQUIRED} / {Reason.INSURANCE_EXPIRED})",
        ),
        RuleRow(
            rule=f"a pool worth more than {rules.high_value_pool_minor} minor units",
            applies_to=Action.CREATE_POOL.value,
            outcome=f"deposit of {rules.organizer_deposit_bp} bp of its value "
            f"({Reason.HIGH_VALUE_POOL}), or allow with purchase protection "
            f"({Reason.PURCHASE_PROTECTED})",
        ),
        RuleRow(
            rule=f"fewer than {rules.new_user_completions} completions and an amount above "
            f"{rules.new_user_amount_minor} minor units",
            applies_to=spending,
            outcome=f"deposit of {rules.new_user_deposit_bp} bp of the amount "
            f"({Reason.NEW_USER_DEPOSIT})",
        ),
    ]

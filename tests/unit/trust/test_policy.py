"""The trust gate's rules: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.money import BASIS_POINTS, MAX_AMOUNT_MINOR
from trust.policy import (
    Action,
    Decision,
    PolicyRules,
    Reason,
    Standing,
    Verdict,
    describe,
    evaluate,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
RULES = PolicyRules()
#: A veteran insured driver in good standing; each test changes what it is about.
GOOD = Standing(
    banned=False,
    score=4.6,
    rating_count=30,
    completed_count=20,
    is_driver=True,
    insurance_expires_at=NOW + timedelta(days=90),
)
NEW_USER = msgspec.structs.replace(GOOD, rating_count=0, completed_count=2, score=4.0)
SMALL_MINOR = 10_000


def decide(
    standing: Standing,
    action: Action,
    amount_minor: int = SMALL_MINOR,
    *,
    rules: PolicyRules = RULES,
    protected: bool = False,
) -> Decision:
    return evaluate(standing, action, amount_minor, now=NOW, rules=rules, protected=protected)


def with_(standing: Standing, **changes: object) -> Standing:
    return msgspec.structs.replace(standing, **changes)


ALLOWED = Decision(verdict=Verdict.ALLOW, reasons=[Reason.GOOD_STANDING])


@pytest.mark.parametrize("action", list(Action))
def test_a_user_in_good_standing_is_allowed_every_action(action: Action) -> None:
    assert decide(GOOD, action) == ALLOWED


@pytest.mark.parametrize("action", list(Action))
def test_a_banned_user_is_denied_every_action(action: Action) -> None:
    assert decide(with_(GOOD, banned=True), action) == Decision(
        verdict=Verdict.DENY, reasons=[Reason.BANNED]
    )


@pytest.mark.parametrize("action", list(Action))
def test_a_score_below_the_floor_is_denied_every_action(action: Action) -> None:
    low = with_(GOOD, score=2.49, rating_count=5)
    assert decide(low, action) == Decision(verdict=Verdict.DENY, reasons=[Reason.SCORE_BELOW_FLOOR])


def test_the_score_floor_waits_for_enough_ratings_and_spares_the_floor_itself() -> None:
    assert decide(with_(GOOD, score=1.0, rating_count=4), Action.JOIN_POOL) == ALLOWED
    assert decide(with_(GOOD, score=2.5, rating_count=50), Action.JOIN_POOL) == ALLOWED


@pytest.mark.parametrize("action", [Action.OFFER_RIDE, Action.ACCEPT_MATCH])
def test_offering_a_ride_or_accepting_a_match_needs_the_driver_role(action: Action) -> None:
    assert decide(with_(GOOD, is_driver=False), action).reasons == [Reason.DRIVER_ROLE_REQUIRED]


@pytest.mark.parametrize("action", [Action.OFFER_RIDE, Action.ACCEPT_MATCH])
def test_offering_a_ride_or_accepting_a_match_needs_a_verified_insurance_policy(
    action: Action,
) -> None:
    uninsured = with_(GOOD, insurance_expires_at=None)
    assert decide(uninsured, action) == Decision(
        verdict=Verdict.DENY, reasons=[Reason.INSURANCE_REQUIRED]
    )


@pytest.mark.parametrize("expires_at", [NOW, NOW - timedelta(seconds=1)])
def test_a_policy_expiring_now_or_earlier_is_expired(expires_at: datetime) -> None:
    lapsed = with_(GOOD, insurance_expires_at=expires_at)
    assert decide(lapsed, Action.OFFER_RIDE) == Decision(
        verdict=Verdict.DENY, reasons=[Reason.INSURANCE_EXPIRED]
    )


@pytest.mark.parametrize(
    "action", [Action.JOIN_POOL, Action.CREATE_POOL, Action.REQUEST_RIDE, Action.PAYOUT]
)
def test_passengers_and_buyers_need_neither_the_driver_role_nor_insurance(action: Action) -> None:
    assert decide(with_(GOOD, is_driver=False, insurance_expires_at=None), action) == ALLOWED


def test_a_high_value_pool_needs_an_organizer_deposit() -> None:
    assert decide(GOOD, Action.CREATE_POOL, 2_000_001) == Decision(
        verdict=Verdict.REQUIRE_DEPOSIT, deposit_minor=200_000, reasons=[Reason.HIGH_VALUE_POOL]
    )
    assert decide(GOOD, Action.CREATE_POOL, RULES.high_value_pool_minor) == ALLOWED
    assert decide(GOOD, Action.JOIN_POOL, 2_000_001) == ALLOWED


def test_a_high_value_pool_with_purchase_protection_is_allowed() -> None:
    assert decide(GOOD, Action.CREATE_POOL, 2_000_000, protected=True) == Decision(
        verdict=Verdict.ALLOW, reasons=[Reason.PURCHASE_PROTECTED]
    )


@pytest.mark.parametrize(
    "action", [Action.JOIN_POOL, Action.CREATE_POOL, Action.REQUEST_RIDE, Action.ACCEPT_MATCH]
)
def test_a_new_user_moving_more_than_the_threshold_puts_down_a_deposit(action: Action) -> None:
    # 20 % of 50,003 is 10,000.6, rounded half-even to 10,001.
    assert decide(NEW_USER, action, 50_003) == Decision(
        verdict=Verdict.REQUIRE_DEPOSIT, deposit_minor=10_001, reasons=[Reason.NEW_USER_DEPOSIT]
    )
    assert decide(NEW_USER, action, RULES.new_user_amount_minor) == ALLOWED
    assert decide(with_(NEW_USER, completed_count=3), action, 50_003) == ALLOWED


@pytest.mark.parametrize("action", [Action.OFFER_RIDE, Action.PAYOUT])
def test_offering_a_ride_or_a_payout_asks_no_new_user_deposit(action: Action) -> None:
    assert decide(NEW_USER, action, 1_000_000) == ALLOWED


def test_when_both_deposit_rules_apply_the_larger_is_taken_with_both_reasons() -> None:
    assert decide(NEW_USER, Action.CREATE_POOL, 2_000_000) == Decision(
        verdict=Verdict.REQUIRE_DEPOSIT,
        deposit_minor=400_000,
        reasons=[Reason.HIGH_VALUE_POOL, Reason.NEW_USER_DEPOSIT],
    )
    generous = PolicyRules(organizer_deposit_bp=5_000)
    assert decide(NEW_USER, Action.CREATE_POOL, 2_000_000, rules=generous).deposit_minor == (
        1_000_000
    )


def test_purchase_protection_does_not_waive_the_new_user_deposit() -> None:
    assert decide(NEW_USER, Action.CREATE_POOL, 2_000_000, protected=True) == Decision(
        verdict=Verdict.REQUIRE_DEPOSIT,
        deposit_minor=400_000,
        reasons=[Reason.NEW_USER_DEPOSIT, Reason.PURCHASE_PROTECTED],
    )


def test_every_deny_reason_is_reported_in_rule_order() -> None:
    worst = with_(
        GOOD, banned=True, score=1.0, rating_count=9, is_driver=False, insurance_expires_at=None
    )
    assert decide(worst, Action.OFFER_RIDE).reasons == [
        Reason.BANNED,
        Reason.SCORE_BELOW_FLOOR,
        Reason.DRIVER_ROLE_REQUIRED,
        Reason.INSURANCE_REQUIRED,
    ]


def test_a_denial_asks_for_no_deposit_even_when_a_deposit_rule_applies() -> None:
    assert decide(with_(NEW_USER, banned=True), Action.CREATE_POOL, 5_000_000) == Decision(
        verdict=Verdict.DENY, reasons=[Reason.BANNED]
    )


def test_a_deposit_that_rounds_to_nothing_is_not_asked_for() -> None:
    tiny = PolicyRules(new_user_amount_minor=0, new_user_deposit_bp=1)
    assert decide(NEW_USER, Action.JOIN_POOL, 4_999, rules=tiny) == ALLOWED
    no_organizer_deposit = PolicyRules(organizer_deposit_bp=0)
    assert decide(NEW_USER, Action.CREATE_POOL, 2_000_000, rules=no_organizer_deposit).reasons == [
        Reason.NEW_USER_DEPOSIT
    ]


def test_a_negative_amount_is_refused() -> None:
    with pytest.raises(ValueError, match="amount_minor"):
        decide(GOOD, Action.JOIN_POOL, -1)


standings = st.builds(
    Standing,
    banned=st.booleans(),
    score=st.floats(1.0, 5.0),
    rating_count=st.integers(0, 100),
    completed_count=st.integers(0, 10),
    is_driver=st.booleans(),
    insurance_expires_at=st.none()
    | st.integers(-3_600, 3_600).map(lambda s: NOW + timedelta(seconds=s)),
)
rules = st.builds(
    PolicyRules,
    score_floor=st.floats(1.0, 5.0),
    score_floor_min_ratings=st.integers(1, 50),
    new_user_completions=st.integers(1, 10),
    new_user_amount_minor=st.integers(0, 10**6),
    new_user_deposit_bp=st.integers(0, BASIS_POINTS),
    high_value_pool_minor=st.integers(0, 10**8),
    organizer_deposit_bp=st.integers(0, BASIS_POINTS),
)
actions = st.sampled_from(Action)
amounts = st.integers(0, MAX_AMOUNT_MINOR)


@given(standings, actions, amounts, rules, st.booleans())
def test_a_banned_user_is_always_denied(
    standing: Standing, action: Action, amount_minor: int, rules: PolicyRules, protected: bool
) -> None:
    banned = with_(standing, banned=True)
    decision = decide(banned, action, amount_minor, rules=rules, protected=protected)
    assert decision.verdict is Verdict.DENY
    assert decision.reasons[0] == Reason.BANNED


@given(standings, actions, amounts, rules, st.booleans())
def test_a_decision_has_reasons_and_a_deposit_exactly_when_it_requires_one(
    standing: Standing, action: Action, amount_minor: int, rules: PolicyRules, protected: bool
) -> None:
    decision = decide(standing, action, amount_minor, rules=rules, protected=protected)
    assert decision.reasons
    assert len(set(decision.reasons)) == len(decision.reasons)
    assert set(decision.reasons) <= {reason.value for reason in Reason}
    if decision.verdict is Verdict.REQUIRE_DEPOSIT:
        assert 0 < decision.deposit_minor <= amount_minor
    else:
        assert decision.deposit_minor == 0
    if Reason.GOOD_STANDING in decision.reasons:
        assert decision == ALLOWED


@given(standings, actions, amounts, amounts, rules, st.booleans())
def test_a_larger_amount_never_turns_a_new_users_deposit_into_an_allow(
    standing: Standing,
    action: Action,
    amount_minor: int,
    other_minor: int,
    rules: PolicyRules,
    protected: bool,
) -> None:
    new_user = with_(standing, completed_count=0)
    smaller, larger = sorted((amount_minor, other_minor))
    before = decide(new_user, action, smaller, rules=rules, protected=protected)
    after = decide(new_user, action, larger, rules=rules, protected=protected)
    if before.verdict is Verdict.REQUIRE_DEPOSIT:
        assert after.verdict is Verdict.REQUIRE_DEPOSIT
        assert after.deposit_minor >= before.deposit_minor


@given(rules)
def test_describe_covers_every_reason_but_good_standing(rules: PolicyRules) -> None:
    outcomes = " ".join(row.outcome for row in describe(rules))
    assert Reason.GOOD_STANDING.value not in outcomes
    for reason in set(Reason) - {Reason.GOOD_STANDING}:
        assert reason.value in outcomes


def test_describe_states_the_configured_thresholds() -> None:
    rows = describe(PolicyRules(score_floor=3.0, new_user_amount_minor=12_345))
    text = " ".join(f"{row.rule} {row.applies_to} {row.outcome}" for row in rows)
    assert "score below 3.0" in text
    assert "12345" in text
    assert all(row.rule and row.applies_to and row.outcome for row in rows)

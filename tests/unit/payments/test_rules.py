"""The balance rules, pure: every movement keeps the posted balances of a currency summing to zero
and never lets a limited account's available balance go below zero."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments import rules

amounts = st.integers(1, 10**12)


def posted_sum(*deltas: rules.Balances) -> int:
    return sum(d.credits_posted - d.debits_posted for d in deltas)


@given(amount=amounts, is_hold=st.booleans())
def test_a_new_transfer_or_hold_moves_as_much_out_as_in(amount: int, is_hold: bool) -> None:
    debit, credit = rules.staged(amount, is_hold=is_hold)
    assert posted_sum(debit, credit) == 0
    assert debit.debits_pending + debit.debits_posted == amount
    assert credit.credits_pending + credit.credits_posted == amount


@given(held=amounts, data=st.data())
def test_resolving_a_hold_releases_all_of_it_and_posts_at_most_what_was_held(
    held: int, data: st.DataObject
) -> None:
    posted = data.draw(st.integers(0, held))
    hold_debit, hold_credit = rules.staged(held, is_hold=True)
    debit, credit = rules.resolved(held, posted)
    after_debit, after_credit = hold_debit.plus(debit), hold_credit.plus(credit)
    assert after_debit == rules.Balances(debits_posted=posted)
    assert after_credit == rules.Balances(credits_posted=posted)
    assert posted_sum(after_debit, after_credit) == 0


def test_a_capture_beyond_the_hold_is_not_a_rule() -> None:
    with pytest.raises(ValueError, match="between"):
        rules.resolved(100, 101)


@given(credited=st.integers(0, 10**6), held=st.integers(0, 10**6), amount=amounts)
def test_a_limited_account_is_debited_only_within_what_is_available(
    credited: int, held: int, amount: int
) -> None:
    balances = rules.Balances(debits_pending=min(held, credited), credits_posted=credited)
    allowed = rules.may_debit(balances, amount, limited=True)
    assert allowed == (rules.available(balances) >= amount)
    if allowed:
        debit, _ = rules.staged(amount, is_hold=False)
        assert rules.available(balances.plus(debit)) >= 0
    assert rules.may_debit(balances, amount, limited=False)

"""The balance rules of the ledger, stated once (pure: no I/O).

Both paths obey exactly these rules: the PL/pgSQL functions of migrations 0003-0007 on PostgreSQL
and payments/portable.py on SQLite, and the model test checks both against them.

- An account keeps four sums in minor units: debits_pending, debits_posted, credits_pending,
  credits_posted. None is ever negative.
- A posted transfer of `a` adds `a` to the debit account's debits_posted and the credit
  account's credits_posted. A hold of `a` adds `a` to debits_pending and credits_pending instead.
- Resolving a hold of `h` takes `h` off both pending sums; a capture of `c` (0 < c <= h) adds `c`
  to both posted sums. A void or an expiry posts nothing.
- A refund of `r` is a posted transfer the other way; refunds of a transfer never add up to more
  than it moved.
- An account with `debits_must_not_exceed_credits` (a wallet, an escrow) is debited only while
  available = credits_posted - debits_posted - debits_pending covers the amount.
- Hence the posted balances (credits_posted - debits_posted) of all accounts of a currency always
  sum to zero.
"""

from __future__ import annotations

from typing import NamedTuple


class Balances(NamedTuple):
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    def plus(self, delta: Balances) -> Balances:
        return Balances(*(a + b for a, b in zip(self, delta, strict=True)))


def available(balances: Balances) -> int:
    """What a limited account may still be debited."""
    return balances.credits_posted - balances.debits_posted - balances.debits_pending


def may_debit(balances: Balances, amount_minor: int, *, limited: bool) -> bool:
    return not limited or available(balances) >= amount_minor


def staged(amount_minor: int, *, is_hold: bool) -> tuple[Balances, Balances]:
    """(debit account delta, credit account delta) of a new transfer or hold."""
    if is_hold:
        return Balances(debits_pending=amount_minor), Balances(credits_pending=amount_minor)
    return Balances(debits_posted=amount_minor), Balances(credits_posted=amount_minor)


def resolved(held_minor: int, posted_minor: int) -> tuple[Balances, Balances]:
    """(debit delta, credit delta) when a hold of `held_minor` ends, `posted_minor` captured."""
    if not 0 <= posted_minor <= held_minor:
        raise ValueError("a capture posts between 1 and the held amount")
    return (
        Balances(debits_pending=-held_minor, debits_posted=posted_minor),
        Balances(credits_pending=-held_minor, credits_posted=posted_minor),
    )

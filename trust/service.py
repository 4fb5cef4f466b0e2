"""Use cases of trust, in one place for the API, the jobs and the other domains.

Functions that take a `UnitOfWork` are whole use cases (they commit); functions that take a session
act inside the caller's unit of work, so another domain (a pool's settlement, a ride's completion)
can register a transaction, take, release or forfeit a deposit, or ask the gate, atomically with
its own rows. Each idea lives in its own module: registry, ratings, reputation, insurance,
complaints, deposits, gate, audit.
"""

from __future__ import annotations

from trust.audit import audit, audit_trail
from trust.complaints import (
    ComplaintView,
    decide_complaint,
    file_complaint,
    get_complaint,
    list_complaints,
)
from trust.deposits import (
    collect_premium,
    forfeit_deposits,
    release_after,
    release_deposits,
    release_due_deposits,
    take_deposit,
)
from trust.gate import evaluate, require_allowed, standing_of, standings_of
from trust.insurance import get_policy, list_policies, reject_policy, submit_policy, verify_policy
from trust.ratings import PublicRating, public_ratings, rate, reveal_due_ratings
from trust.registry import Party, record_cancellation, register_transaction
from trust.reputation import InsuranceState, ReputationView, reputation_of

__all__ = [
    "ComplaintView",
    "InsuranceState",
    "Party",
    "PublicRating",
    "ReputationView",
    "audit",
    "audit_trail",
    "collect_premium",
    "decide_complaint",
    "evaluate",
    "file_complaint",
    "forfeit_deposits",
    "get_complaint",
    "get_policy",
    "list_complaints",
    "list_policies",
    "public_ratings",
    "rate",
    "record_cancellation",
    "register_transaction",
    "reject_policy",
    "release_after",
    "release_deposits",
    "release_due_deposits",
    "reputation_of",
    "require_allowed",
    "reveal_due_ratings",
    "standing_of",
    "standings_of",
    "submit_policy",
    "take_deposit",
    "verify_policy",
]

"""The trust gate: consulted before a pool is joined or created, a ride offered or accepted, and
before a settlement pays out. It reads the user's standing (one row of users joined to their
reputation) and applies the pure rules of trust/policy.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from app.accounts.models import Role
from app.db import AsyncSession
from trust import score
from trust.errors import Denied
from trust.policy import Action, Decision, PolicyRules, Standing, Verdict
from trust.policy import evaluate as decide
from trust.reputation import ReputationView, reputation_of, reputations_of


def standing(view: ReputationView) -> Standing:
    """What the policy needs to know, from a user's reputation view."""
    return Standing(
        banned=view.banned,
        score=view.reputation.score,
        rating_count=view.reputation.rating_count,
        completed_count=view.reputation.completed_count,
        is_driver=Role.DRIVER.value in view.roles,
        insurance_expires_at=view.insurance.expires_at if view.insurance else None,
    )


async def standing_of(
    session: AsyncSession, *, user_id: UUID, params: score.ScoreParams, now: datetime
) -> Standing:
    """A user's standing, read in one query (their row joined to their reputation)."""
    return standing(await reputation_of(session, user_id=user_id, params=params, now=now))


async def standings_of(
    session: AsyncSession, *, user_ids: Sequence[UUID], params: score.ScoreParams, now: datetime
) -> dict[UUID, Standing]:
    """Several users' standings in one query (a batch of joins asks the gate for each member);
    users missing or deactivated are left out."""
    views = await reputations_of(session, user_ids=user_ids, params=params, now=now)
    return {user_id: standing(view) for user_id, view in views.items()}


async def evaluate(
    session: AsyncSession,
    *,
    user_id: UUID,
    action: Action,
    amount_minor: int,
    currency: str,
    now: datetime,
    rules: PolicyRules,
    params: score.ScoreParams,
    protected: bool = False,
) -> Decision:
    """allow, require_deposit(amount) or deny, with reason codes, for this user and action.

    Amount thresholds in the rules are minor units of whatever `currency` the action moves.
    """
    del currency  # one set of thresholds for every currency (see the README's rule table)
    standing = await standing_of(session, user_id=user_id, params=params, now=now)
    return decide(standing, action, amount_minor, now=now, rules=rules, protected=protected)


def require_allowed(decision: Decision) -> Decision:
    """Raise Denied (403, with the reasons) when the gate said deny; else hand it back."""
    if decision.verdict is Verdict.DENY:
        raise Denied(
            "the trust policy refuses this action: " + ", ".join(decision.reasons),
            reasons=list(decision.reasons),
        )
    return decision

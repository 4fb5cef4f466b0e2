"""The trust controllers: parse, authorize, call the service, shape the answer.

Verifying insurance (which grants the driver role) and bans change accounts too; their admin
routes live in app/admin.py, which wires the two domains into one unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from app.accounts.models import Role
from app.auth import Principal, require_role
from app.clock import in_utc
from app.db import AsyncSession
from app.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    next_cursor,
)
from app.problems import problem_responses
from app.uow import UnitOfWork
from trust import gate, policy, service
from trust.config import TrustConfig
from trust.models import (
    AuditEntry,
    ComplaintCategory,
    ComplaintStatus,
    InsurancePolicy,
    PolicyStatus,
    SubjectType,
)
from trust.schemas import (
    ActionDecisionOut,
    AuditOut,
    ComplaintIn,
    ComplaintOut,
    DecisionIn,
    InsuranceOut,
    PolicyIn,
    PolicyOut,
    PublicRatingOut,
    RatingIn,
    RatingOut,
    RejectIn,
    ReputationOut,
    RuleOut,
    TrustOut,
)

#: A retry with the same Idempotency-Key answers what the first request did (see app/idempotency).
IDEMPOTENT = {"idempotent": True}
#: The amount at which GET /v1/me/trust asks the gate about each action.
PROBE_AMOUNT_MINOR = 1


def trust_config(request: Request[Any, Any, State]) -> TrustConfig:
    config: TrustConfig = request.app.state.trust
    return config


def admin_actor(principal: Principal) -> str:
    return f"admin:{principal.user_id}"


def policy_out(policy: InsurancePolicy) -> PolicyOut:
    return PolicyOut(
        id=policy.id,
        user_id=policy.user_id,
        provider=policy.provider,
        policy_number=policy.policy_number,
        expires_at=policy.expires_at,
        status=PolicyStatus(policy.status).value,
        submitted_at=policy.submitted_at,
        decided_at=policy.decided_at,
        decision_reason=policy.decision_reason,
    )


def complaint_out(view: service.ComplaintView) -> ComplaintOut:
    complaint = view.complaint
    return ComplaintOut(
        id=complaint.id,
        subject_type=view.subject_type,
        subject_id=view.subject_id,
        filer_id=complaint.filer_id,
        filer_display_name=view.filer_display_name,
        against_user_id=complaint.accused_id,
        against_display_name=view.accused_display_name,
        category=complaint.category,
        text=complaint.text,
        status=ComplaintStatus(complaint.status).value,
        created_at=complaint.created_at,
        decided_at=complaint.decided_at,
        decision_reason=complaint.decision_reason,
        forfeited_minor=complaint.forfeited_minor,
        payout_minor=complaint.payout_minor,
        currency=view.currency,
    )


def _insurance_out(view: service.ReputationView) -> InsuranceOut | None:
    if view.insurance is None:
        return None
    return InsuranceOut(verified=view.insurance.verified, expires_at=view.insurance.expires_at)


def reputation_out(view: service.ReputationView) -> ReputationOut:
    rep = view.reputation
    return ReputationOut(
        user_id=view.user_id,
        score=rep.score,
        rating_average=rep.rating_average,
        rating_count=rep.rating_count,
        completed_count=rep.completed_count,
        badges=list(rep.badges),
        insurance=_insurance_out(view),
        positive_lower_bound=rep.positive_lower_bound,
        cancellation_rate=rep.cancellation_rate,
        complaints_received=view.complaints_received,
        complaints_upheld=rep.complaints_upheld,
    )


def _next_cursor(rows: Sequence[Any], limit: int) -> str | None:
    return next_cursor(rows, limit, lambda row: row.row_id)


class TrustController(Controller):
    path = "/v1"
    tags = ["trust"]

    @post(
        "/ratings",
        opt=IDEMPOTENT,
        status_code=201,
        summary="Rate a counterparty of a completed pool or ride",
        description="Once per counterparty and transaction, within the rating window (14 days "
        "by default). Double-blind: nobody else sees the rating until the counterparty rated "
        "you too, or the window closed.",
        responses=problem_responses(401, 403, 409, 422),
    )
    async def rate(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[RatingIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> RatingOut:
        rating = await service.rate(
            uow,
            rater_id=principal.user_id,
            subject_type=SubjectType(data.subject_type),
            subject_id=data.subject_id,
            ratee_id=data.ratee_id,
            stars=data.stars,
            comment=data.comment,
            window=trust_config(request).rating_window,
            now=now,
        )
        return RatingOut(
            id=rating.id,
            subject_type=data.subject_type,
            subject_id=data.subject_id,
            rater_id=rating.rater_id,
            ratee_id=rating.ratee_id,
            stars=rating.stars,
            comment=rating.comment,
            created_at=rating.created_at,
            reveal_due_at=rating.reveal_due_at,
            revealed=rating.revealed_at is not None,
        )

    @get(
        "/users/{user_id:uuid}/reputation",
        summary="A user's public reputation",
        responses=problem_responses(401, 404),
    )
    async def reputation(
        self,
        request: Request[Any, Any, State],
        user_id: FromPath[UUID],
        reader: NamedDependency[AsyncSession],
        now: NamedDependency[datetime],
    ) -> ReputationOut:
        view = await service.reputation_of(
            reader, user_id=user_id, params=trust_config(request).score, now=now
        )
        return reputation_out(view)

    @get(
        "/users/{user_id:uuid}/ratings",
        summary="A user's revealed ratings, newest first",
        responses=problem_responses(401, 404, 422),
    )
    async def ratings(
        self,
        user_id: FromPath[UUID],
        reader: NamedDependency[AsyncSession],
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[PublicRatingOut]:
        rows = await service.public_ratings(
            reader, user_id=user_id, limit=limit + 1, before=decode_cursor(cursor)
        )
        items = [
            PublicRatingOut(
                stars=row.stars,
                comment=row.comment,
                created_at=row.created_at,
                rater_display_name=row.rater_display_name,
                role=row.role,
            )
            for row in rows[:limit]
        ]
        return Page(items=items, next_cursor=_next_cursor(rows, limit))

    @post(
        "/me/insurance",
        status_code=201,
        opt=IDEMPOTENT,
        summary="Submit an insurance policy for verification",
        description="An admin verifies it; verification grants the driver role. One policy "
        "at a time waits for a decision (409 insurance-pending).",
        responses=problem_responses(401, 409, 422),
    )
    async def submit_insurance(
        self,
        data: JSONBody[PolicyIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> PolicyOut:
        policy_row = await service.submit_policy(
            uow,
            user_id=principal.user_id,
            provider=data.provider,
            policy_number=data.policy_number,
            expires_at=in_utc(data.expires_at),
            now=now,
        )
        return policy_out(policy_row)

    @get(
        "/me/insurance",
        summary="The caller's submitted policies, newest first",
        responses=problem_responses(401, 422),
    )
    async def my_insurance(
        self,
        principal: NamedDependency[Principal],
        reader: NamedDependency[AsyncSession],
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[PolicyOut]:
        rows = await service.list_policies(
            reader,
            status=None,
            user_id=principal.user_id,
            limit=limit + 1,
            before=decode_cursor(cursor),
        )
        items = [policy_out(row) for row in rows[:limit]]
        return Page(items=items, next_cursor=_next_cursor(rows, limit))

    @get(
        "/me/trust",
        summary="The caller's standing and why: score, badges, ban, insurance, deposit rules",
        responses=problem_responses(401),
    )
    async def my_trust(
        self,
        request: Request[Any, Any, State],
        principal: NamedDependency[Principal],
        reader: NamedDependency[AsyncSession],
        now: NamedDependency[datetime],
    ) -> TrustOut:
        config = trust_config(request)
        view = await service.reputation_of(
            reader, user_id=principal.user_id, params=config.score, now=now
        )
        standing = gate.standing(view)
        decisions = [
            (
                action,
                policy.evaluate(standing, action, PROBE_AMOUNT_MINOR, now=now, rules=config.rules),
            )
            for action in policy.Action
        ]
        reasons = sorted(
            {
                reason
                for _, decision in decisions
                for reason in decision.reasons
                if reason != policy.Reason.GOOD_STANDING
            }
        )
        return TrustOut(
            score=view.reputation.score,
            badges=list(view.reputation.badges),
            banned=view.banned,
            insurance=_insurance_out(view),
            deposit_rules=[
                RuleOut(rule=row.rule, applies_to=row.applies_to, outcome=row.outcome)
                for row in policy.describe(config.rules)
            ],
            reasons=reasons,
            decisions=[
                ActionDecisionOut(
                    action=action.value,
                    verdict=decision.verdict.value,
                    reasons=list(decision.reasons),
                )
                for action, decision in decisions
            ],
        )

    @post(
        "/complaints",
        status_code=201,
        opt=IDEMPOTENT,
        summary="Complain about a counterparty of a completed pool or ride",
        description="An admin decides it (upheld or rejected) with a written reason; the filer "
        "and the accused both see the decision.",
        responses=problem_responses(401, 403, 409, 422),
    )
    async def complain(
        self,
        data: JSONBody[ComplaintIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        reader: NamedDependency[AsyncSession],
        now: NamedDependency[datetime],
    ) -> ComplaintOut:
        complaint = await service.file_complaint(
            uow,
            filer_id=principal.user_id,
            subject_type=SubjectType(data.subject_type),
            subject_id=data.subject_id,
            against_user_id=data.against_user_id,
            category=ComplaintCategory(data.category),
            text=data.text,
            now=now,
        )
        view = await service.get_complaint(
            reader, complaint_id=complaint.id, viewer_id=principal.user_id
        )
        return complaint_out(view)

    @get(
        "/complaints",
        summary="The caller's complaints, filed and received, newest first",
        responses=problem_responses(401, 422),
    )
    async def complaints(
        self,
        principal: NamedDependency[Principal],
        reader: NamedDependency[AsyncSession],
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[ComplaintOut]:
        rows = await service.list_complaints(
            reader,
            party_id=principal.user_id,
            status=None,
            limit=limit + 1,
            before=decode_cursor(cursor),
        )
        return _complaint_page(rows, limit)

    @get(
        "/complaints/{complaint_id:uuid}",
        summary="One of the caller's complaints (filed or received)",
        responses=problem_responses(401, 404),
    )
    async def complaint(
        self,
        complaint_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        reader: NamedDependency[AsyncSession],
    ) -> ComplaintOut:
        view = await service.get_complaint(
            reader, complaint_id=complaint_id, viewer_id=principal.user_id
        )
        return complaint_out(view)


def _complaint_page(rows: list[service.ComplaintView], limit: int) -> Page[ComplaintOut]:
    items = [complaint_out(view) for view in rows[:limit]]
    return Page(items=items, next_cursor=next_cursor(rows, limit, lambda v: v.complaint.row_id))


class TrustAdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    guards = [require_role(Role.ADMIN)]

    @get(
        "/insurance",
        summary="Submitted insurance policies, newest first",
        responses=problem_responses(401, 403, 422),
    )
    async def policies(
        self,
        reader: NamedDependency[AsyncSession],
        status: FromQuery[PolicyStatus | None] = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[PolicyOut]:
        rows = await service.list_policies(
            reader, status=status, limit=limit + 1, before=decode_cursor(cursor)
        )
        items = [policy_out(row) for row in rows[:limit]]
        return Page(items=items, next_cursor=_next_cursor(rows, limit))

    @post(
        "/insurance/{policy_id:uuid}/reject",
        status_code=200,
        summary="Refuse a pending policy, with a reason",
        responses=problem_responses(401, 403, 404, 409, 422),
    )
    async def reject(
        self,
        policy_id: FromPath[UUID],
        data: JSONBody[RejectIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> PolicyOut:
        policy_row = await service.reject_policy(
            uow,
            policy_id=policy_id,
            admin_id=principal.user_id,
            actor=admin_actor(principal),
            reason=data.reason,
            now=now,
        )
        return policy_out(policy_row)

    @get(
        "/complaints",
        summary="Complaints with both parties, newest first",
        responses=problem_responses(401, 403, 422),
    )
    async def complaints(
        self,
        reader: NamedDependency[AsyncSession],
        status: FromQuery[ComplaintStatus | None] = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[ComplaintOut]:
        rows = await service.list_complaints(
            reader, party_id=None, status=status, limit=limit + 1, before=decode_cursor(cursor)
        )
        return _complaint_page(rows, limit)

    @post(
        "/complaints/{complaint_id:uuid}/decide",
        opt=IDEMPOTENT,
        status_code=200,
        summary="Uphold or reject an open complaint",
        description="Upheld: counts against the accused's reputation; `forfeit_deposit` pays "
        "the accused's deposit for that transaction to the filer; `payout_minor` pays the "
        "filer out of the insurance fund (purchase protection; 402 if the fund is short).",
        responses=problem_responses(401, 402, 403, 404, 409, 422),
    )
    async def decide(
        self,
        request: Request[Any, Any, State],
        complaint_id: FromPath[UUID],
        data: JSONBody[DecisionIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> ComplaintOut:
        view = await service.decide_complaint(
            uow,
            complaint_id=complaint_id,
            admin_id=principal.user_id,
            actor=admin_actor(principal),
            outcome=ComplaintStatus(data.outcome),
            reason=data.reason,
            forfeit_deposit=data.forfeit_deposit,
            payout_minor=data.payout_minor,
            currency=data.currency,
            now=now,
        )
        return complaint_out(view)

    @get(
        "/audit",
        summary="Admin decisions (verify, reject, decide, ban, unban), newest first",
        responses=problem_responses(401, 403, 422),
    )
    async def audit(
        self,
        reader: NamedDependency[AsyncSession],
        target_id: FromQuery[UUID | None] = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[AuditOut]:
        rows = await service.audit_trail(
            reader, target_id=target_id, limit=limit + 1, before=decode_cursor(cursor)
        )
        items = [audit_out(row) for row in rows[:limit]]
        return Page(items=items, next_cursor=_next_cursor(rows, limit))


def audit_out(entry: AuditEntry) -> AuditOut:
    return AuditOut(
        actor_id=entry.actor_id,
        actor=entry.actor,
        action=entry.action,
        target_id=entry.target_id,
        reason=entry.reason,
        detail=entry.detail,
        created_at=entry.created_at,
    )

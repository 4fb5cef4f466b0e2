"""Insurance policies: submitted by a user, verified or rejected by an admin (audited).

Verification grants the driver role; app/admin.py wires that into the same unit of work.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import Table, select, update
from sqlalchemy.exc import IntegrityError

from app.db import AsyncSession, dialect_insert
from app.uow import UnitOfWork, use_case
from trust.audit import audit
from trust.errors import (
    PolicyDecided,
    PolicyExpired,
    PolicyNotFound,
    PolicyPending,
)
from trust.models import (
    AuditAction,
    InsurancePolicy,
    PolicyStatus,
)
from trust.reputation import REPUTATIONS
from trust.text import required_text

POLICIES: Table = InsurancePolicy.__table__  # type: ignore[attr-defined]
#: No policy is accepted that runs longer than this (and no date beyond what the columns hold).
MAX_POLICY_TERM = timedelta(days=3653)


@use_case
async def submit_policy(
    uow: UnitOfWork,
    *,
    user_id: UUID,
    provider: str,
    policy_number: str,
    expires_at: datetime,
    now: datetime,
) -> InsurancePolicy:
    """File a policy for an admin to verify; at most one per user waits at a time (one that
    expired while waiting is set aside as rejected)."""
    if not now < expires_at <= now + MAX_POLICY_TERM:
        raise PolicyExpired("the policy must expire in the future, within 10 years")
    async with uow:
        await uow.session.execute(
            update(POLICIES)
            .where(
                POLICIES.c.user_id == user_id,
                POLICIES.c.status == PolicyStatus.PENDING.value,
                POLICIES.c.expires_at <= now,
            )
            .values(
                status=PolicyStatus.REJECTED.value,
                decided_at=now,
                decision_reason="expired before it was verified",
            )
        )
        policy = InsurancePolicy(
            user_id=user_id,
            provider=required_text(provider, max_chars=100, field="provider"),
            policy_number=required_text(policy_number, max_chars=64, field="policy_number"),
            expires_at=expires_at,
            status=PolicyStatus.PENDING.value,
            submitted_at=now,
        )
        uow.session.add(policy)
        try:
            await uow.session.flush()
        except IntegrityError:
            raise PolicyPending("wait for the decision on the policy you submitted") from None
        await uow.commit()
    return policy


async def get_policy(session: AsyncSession, policy_id: UUID) -> InsurancePolicy:
    found = (await session.execute(select(POLICIES).where(POLICIES.c.id == policy_id))).first()
    if found is None:
        raise PolicyNotFound(f"no insurance policy {policy_id}")
    return InsurancePolicy(**found._mapping)


async def list_policies(
    session: AsyncSession,
    *,
    status: PolicyStatus | None,
    user_id: UUID | None = None,
    limit: int,
    before: int | None,
) -> list[InsurancePolicy]:
    query = select(POLICIES).order_by(POLICIES.c.row_id.desc()).limit(limit)
    if status is not None:
        query = query.where(POLICIES.c.status == status.value)
    if user_id is not None:
        query = query.where(POLICIES.c.user_id == user_id)
    if before is not None:
        query = query.where(POLICIES.c.row_id < before)
    return [InsurancePolicy(**row._mapping) for row in (await session.execute(query)).all()]


async def _decide_policy(
    session: AsyncSession,
    *,
    policy_id: UUID,
    status: PolicyStatus,
    admin_id: UUID | None,
    reason: str | None,
    now: datetime,
) -> InsurancePolicy:
    """Move a pending policy to `status` exactly once (a conditional UPDATE)."""
    done = await session.execute(
        update(POLICIES)
        .where(POLICIES.c.id == policy_id, POLICIES.c.status == PolicyStatus.PENDING.value)
        .values(status=status.value, decided_at=now, decided_by=admin_id, decision_reason=reason)
        .returning(*POLICIES.c)
    )
    row = done.first()
    if row is None:
        policy = await get_policy(session, policy_id)  # raises PolicyNotFound
        raise PolicyDecided(f"this policy is already {policy.status}")
    return InsurancePolicy(**row._mapping)


async def verify_policy(
    session: AsyncSession,
    *,
    policy_id: UUID,
    admin_id: UUID | None,
    actor: str,
    now: datetime,
) -> InsurancePolicy:
    """Mark a pending, unexpired policy verified and make it the user's insurance (in the
    caller's unit of work, which also grants the driver role)."""
    policy = await _decide_policy(
        session,
        policy_id=policy_id,
        status=PolicyStatus.VERIFIED,
        admin_id=admin_id,
        reason=None,
        now=now,
    )
    if policy.expires_at <= now:
        raise PolicyExpired("this policy has expired; ask the user to submit a current one")
    await session.execute(
        dialect_insert(session, REPUTATIONS)
        .values(user_id=policy.user_id, insurance_expires_at=policy.expires_at)
        .on_conflict_do_update(
            index_elements=["user_id"], set_={"insurance_expires_at": policy.expires_at}
        )
    )
    await audit(
        session,
        actor_id=admin_id,
        actor=actor,
        action=AuditAction.VERIFY_INSURANCE,
        target_id=policy.id,
        reason=None,
        detail=f"user {policy.user_id}, expires {policy.expires_at.isoformat()}",
        now=now,
    )
    return policy


@use_case
async def reject_policy(
    uow: UnitOfWork,
    *,
    policy_id: UUID,
    admin_id: UUID | None,
    actor: str,
    reason: str,
    now: datetime,
) -> InsurancePolicy:
    """Refuse a pending policy, with the reason the user will see."""
    reason = required_text(reason, max_chars=500, field="reason")
    async with uow:
        policy = await _decide_policy(
            uow.session,
            policy_id=policy_id,
            status=PolicyStatus.REJECTED,
            admin_id=admin_id,
            reason=reason,
            now=now,
        )
        await audit(
            uow.session,
            actor_id=admin_id,
            actor=actor,
            action=AuditAction.REJECT_INSURANCE,
            target_id=policy.id,
            reason=reason,
            detail=f"user {policy.user_id}",
            now=now,
        )
        await uow.commit()
    return policy

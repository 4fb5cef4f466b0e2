"""The audit trail: every admin decision (verify, reject, decide, ban, unban), who, when, why."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import Table, select

from app.db import AsyncSession
from trust.models import (
    AuditAction,
    AuditEntry,
)

AUDIT: Table = AuditEntry.__table__  # type: ignore[attr-defined]


async def audit(
    session: AsyncSession,
    *,
    actor_id: UUID | None,
    actor: str,
    action: AuditAction,
    target_id: UUID,
    reason: str | None,
    detail: str | None,
    now: datetime,
) -> None:
    """Record an admin decision in the caller's unit of work: it stands or falls with it."""
    await session.execute(
        AUDIT.insert().values(
            actor_id=actor_id,
            actor=actor[:120],
            action=action.value,
            target_id=target_id,
            reason=reason[:1000] if reason else None,
            detail=detail[:1000] if detail else None,
            created_at=now,
        )
    )


async def audit_trail(
    session: AsyncSession, *, target_id: UUID | None, limit: int, before: int | None
) -> list[AuditEntry]:
    query = select(AUDIT).order_by(AUDIT.c.row_id.desc()).limit(limit)
    if target_id is not None:
        query = query.where(AUDIT.c.target_id == target_id)
    if before is not None:
        query = query.where(AUDIT.c.row_id < before)
    return [AuditEntry(**row._mapping) for row in (await session.execute(query)).all()]

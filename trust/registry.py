"""The registry of completed transactions that their parties may rate and complain about.

Other domains write to it inside their own unit of work (a pool's settlement, a ride's
completion); trust never imports them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import msgspec
from sqlalchemy import Table, select

from app.db import AsyncSession, dialect_insert, on_postgres
from trust.errors import (
    NotACounterparty,
    NotAParty,
)
from trust.models import (
    PartyRole,
    SubjectType,
    TrustParty,
    TrustTransaction,
)
from trust.reputation import add_to_reputation

TRANSACTIONS: Table = TrustTransaction.__table__  # type: ignore[attr-defined]
PARTIES: Table = TrustParty.__table__  # type: ignore[attr-defined]

MAX_PARTIES_PER_CALL = 1_000


class Party(msgspec.Struct, frozen=True):
    """A user's part in a completed transaction."""

    user_id: UUID
    role: PartyRole


async def register_transaction(
    session: AsyncSession,
    *,
    subject_type: SubjectType,
    subject_id: UUID,
    parties: Sequence[Party],
    completed_at: datetime,
    currency: str,
    protected: bool = False,
) -> int:
    """Record a completed transaction and its parties (in the caller's unit of work). Safe to
    call again, with more parties (a pool settled in chunks): each party counts once."""
    if len(parties) > MAX_PARTIES_PER_CALL:
        raise ValueError(f"register at most {MAX_PARTIES_PER_CALL} parties per call")
    await session.execute(
        dialect_insert(session, TRANSACTIONS)
        .values(
            subject_type=subject_type.value,
            subject_id=subject_id,
            completed_at=completed_at,
            currency=currency,
            protected=protected,
        )
        .on_conflict_do_nothing(index_elements=["subject_type", "subject_id"])
    )
    row_id: int = (
        await session.execute(
            select(TRANSACTIONS.c.row_id).where(
                TRANSACTIONS.c.subject_type == subject_type.value,
                TRANSACTIONS.c.subject_id == subject_id,
            )
        )
    ).scalar_one()
    if parties:
        ordered = sorted(parties, key=lambda p: str(p.user_id))
        added = await session.execute(
            dialect_insert(session, PARTIES)
            .values(
                [
                    {"transaction_row_id": row_id, "user_id": p.user_id, "role": p.role.value}
                    for p in ordered
                ]
            )
            .on_conflict_do_nothing()
            .returning(PARTIES.c.user_id)
        )
        await add_to_reputation(
            session, {user_id: Counter(completed_count=1) for user_id in added.scalars()}
        )
    return row_id


async def record_cancellation(session: AsyncSession, *, user_id: UUID) -> None:
    """Count a late cancellation or no-show against the user (in the caller's unit of work)."""
    await add_to_reputation(session, {user_id: Counter(cancelled_count=1)})


async def find_transaction(
    session: AsyncSession, subject_type: SubjectType, subject_id: UUID
) -> TrustTransaction | None:
    row = (
        await session.execute(
            select(TRANSACTIONS).where(
                TRANSACTIONS.c.subject_type == subject_type.value,
                TRANSACTIONS.c.subject_id == subject_id,
            )
        )
    ).first()
    return TrustTransaction(**row._mapping) if row else None


async def party_roles(
    session: AsyncSession, transaction_row_id: int, user_ids: Sequence[UUID]
) -> dict[UUID, PartyRole]:
    """The parties' roles, their rows locked (ascending user id) until the unit of work ends."""
    query = (
        select(PARTIES.c.user_id, PARTIES.c.role)
        .where(PARTIES.c.transaction_row_id == transaction_row_id)
        .where(PARTIES.c.user_id.in_(list(user_ids)))
        .order_by(PARTIES.c.user_id)
    )
    if on_postgres(session):
        query = query.with_for_update()
    return {user_id: PartyRole(role) for user_id, role in (await session.execute(query)).all()}


async def counterparties(
    session: AsyncSession,
    *,
    subject_type: SubjectType,
    subject_id: UUID,
    caller_id: UUID,
    other_id: UUID,
) -> tuple[TrustTransaction, PartyRole]:
    """The transaction and the caller's role in it, if `other_id` is their counterparty."""
    transaction = await find_transaction(session, subject_type, subject_id)
    if transaction is None or transaction.row_id is None:
        raise NotAParty("you took no part in a completed transaction with this id")
    roles = await party_roles(session, transaction.row_id, [caller_id, other_id])
    if caller_id not in roles:
        raise NotAParty("you took no part in a completed transaction with this id")
    if other_id == caller_id or roles.get(other_id, roles[caller_id]) == roles[caller_id]:
        raise NotACounterparty("that user was not your counterparty in this transaction")
    return transaction, roles[caller_id]

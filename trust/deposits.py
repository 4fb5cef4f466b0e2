"""Deposits: a hold of a user's money into the subject's deposit escrow, taken when the trust
gate asks for one, released after a clean completion, forfeited on an upheld complaint or a
no-show. Every function acts inside the caller's unit of work, beside the domain's own rows.

Ids derive from what the deposit secures (`deposit:<subject type>:<subject id>:<user id>`), so a
retried or resumed use case finds the deposit it took instead of taking another.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import ColumnElement, Table, and_, select, update

from app.db import AsyncSession, dialect_insert
from payments import ledger
from payments.errors import HoldNotPending
from payments.models import AccountKind, TransferStatus
from payments.records import AccountRef, TransferSpec, escrow, insurance_fund, wallet
from trust.errors import DepositNotHeld
from trust.models import Deposit, DepositStatus, SubjectType

DEPOSITS: Table = Deposit.__table__  # type: ignore[attr-defined]


def _escrow(subject_id: UUID, currency: str) -> AccountRef:
    return escrow(AccountKind.DEPOSIT_ESCROW, subject_id, currency)


def _of_subject(subject_type: SubjectType, subject_id: UUID) -> ColumnElement[bool]:
    return and_(DEPOSITS.c.subject_type == subject_type.value, DEPOSITS.c.subject_id == subject_id)


async def take_deposit(
    session: AsyncSession,
    *,
    user_id: UUID,
    subject_type: SubjectType,
    subject_id: UUID,
    amount_minor: int,
    currency: str,
    expires_at: datetime,
    now: datetime,
) -> Deposit:
    """Hold `amount_minor` of the user's wallet as their deposit for the subject; taking it again
    returns the first one (one deposit per user per subject). InsufficientFunds if it is not
    there, which fails the caller's whole unit of work."""
    hold_id = f"deposit:{subject_type.value}:{subject_id}:{user_id}"
    deposit = Deposit(
        user_id=user_id,
        subject_type=subject_type.value,
        subject_id=subject_id,
        amount_minor=amount_minor,
        currency=currency,
        hold_id=hold_id,
        status=DepositStatus.HELD.value,
        created_at=now,
    )
    values = deposit.model_dump(exclude={"row_id"})
    added = await session.execute(
        dialect_insert(session, DEPOSITS)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["subject_type", "subject_id", "user_id"])
        .returning(DEPOSITS.c.row_id)
    )
    if added.first() is None:
        found = (
            await session.execute(
                select(DEPOSITS).where(
                    _of_subject(subject_type, subject_id), DEPOSITS.c.user_id == user_id
                )
            )
        ).one()
        return Deposit(**found._mapping)
    await ledger.hold(
        session,
        TransferSpec(
            id=hold_id,
            debit=wallet(user_id, currency),
            credit=_escrow(subject_id, currency),
            amount_minor=amount_minor,
            kind="deposit",
            ref=f"{subject_type.value}:{subject_id}",
            expires_at=expires_at,
        ),
        now=now,
    )
    return deposit


async def release_deposits(
    session: AsyncSession,
    *,
    subject_type: SubjectType,
    subject_id: UUID,
    user_ids: Sequence[UUID] | None = None,
    now: datetime,
) -> int:
    """Give back the held deposits of a subject (all, or those of `user_ids`): a clean end."""
    query = (
        update(DEPOSITS)
        .where(_of_subject(subject_type, subject_id), DEPOSITS.c.status == DepositStatus.HELD.value)
        .values(status=DepositStatus.RELEASED.value, resolved_at=now)
        .returning(DEPOSITS.c.hold_id)
    )
    if user_ids is not None:
        query = query.where(DEPOSITS.c.user_id.in_(list(user_ids)))
    hold_ids = sorted((await session.execute(query)).scalars())
    for hold_id in hold_ids:
        held = await ledger.get_transfer(session, hold_id)
        if held is None or held.status != TransferStatus.PENDING:
            continue  # the expiry sweep released it already
        try:
            async with session.begin_nested():
                await ledger.void(session, hold_id=hold_id, now=now)
        except HoldNotPending:
            continue  # released concurrently by the expiry sweep: the money is back either way
    return len(hold_ids)


async def forfeit_deposits(
    session: AsyncSession,
    *,
    subject_type: SubjectType,
    subject_id: UUID,
    user_id: UUID,
    beneficiary_id: UUID | None,
    now: datetime,
) -> int:
    """Take the user's held deposit for the subject and pay it to the beneficiary's wallet (None:
    the insurance fund); answers the amount. DepositNotHeld if there is none to take."""
    taken = (
        await session.execute(
            update(DEPOSITS)
            .where(
                _of_subject(subject_type, subject_id),
                DEPOSITS.c.user_id == user_id,
                DEPOSITS.c.status == DepositStatus.HELD.value,
            )
            .values(
                status=DepositStatus.FORFEITED.value, resolved_at=now, beneficiary_id=beneficiary_id
            )
            .returning(DEPOSITS.c.hold_id, DEPOSITS.c.amount_minor, DEPOSITS.c.currency)
        )
    ).all()
    if not taken:
        raise DepositNotHeld("this user holds no deposit for that transaction")
    total_minor = 0
    for hold_id, amount_minor, currency in taken:
        await ledger.capture(session, hold_id=hold_id, now=now)
        await ledger.transfer(
            session,
            TransferSpec(
                id=f"{hold_id}:forfeit",
                debit=_escrow(subject_id, currency),
                credit=wallet(beneficiary_id, currency)
                if beneficiary_id
                else insurance_fund(currency),
                amount_minor=amount_minor,
                kind="deposit_forfeit",
                ref=f"{subject_type.value}:{subject_id}",
            ),
            now=now,
        )
        total_minor += amount_minor
    return total_minor


async def collect_premium(
    session: AsyncSession,
    *,
    transfer_id: str,
    user_id: UUID,
    amount_minor: int,
    currency: str,
    ref: str,
    now: datetime,
) -> None:
    """Move a purchase-protection premium from the user's wallet into the insurance fund."""
    await ledger.transfer(
        session,
        TransferSpec(
            id=transfer_id,
            debit=wallet(user_id, currency),
            credit=insurance_fund(currency),
            amount_minor=amount_minor,
            kind="protection_premium",
            ref=ref,
        ),
        now=now,
    )

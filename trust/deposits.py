"""Deposits: a hold of a user's money into the subject's deposit escrow, taken when the trust
gate asks for one, released after a clean completion, forfeited on an upheld complaint or a
no-show. Every function acts inside the caller's unit of work, beside the domain's own rows.

Ids derive from what the deposit secures (`deposit:<subject type>:<subject id>:<user id>:<n>`, n
counting the user's deposits for that subject), so a retried or resumed use case finds the deposit
it took instead of taking another. After a completion a deposit stays held through the complaint
window (`release_after`), so an upheld complaint can still forfeit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import ColumnElement, Table, and_, select, update

from app.db import AsyncSession
from payments import ledger
from payments.models import AccountKind, TransferStatus
from payments.records import AccountRef, TransferSpec, escrow, insurance_fund, wallet
from trust.errors import DepositNotHeld
from trust.models import (
    Complaint,
    ComplaintStatus,
    Deposit,
    DepositStatus,
    SubjectType,
    TrustTransaction,
)

DEPOSITS: Table = Deposit.__table__  # type: ignore[attr-defined]
COMPLAINTS: Table = Complaint.__table__  # type: ignore[attr-defined]
TRANSACTIONS: Table = TrustTransaction.__table__  # type: ignore[attr-defined]


def _escrow(subject_id: UUID, currency: str) -> AccountRef:
    return escrow(AccountKind.DEPOSIT_ESCROW, subject_id, currency)


def _of_subject(subject_type: SubjectType, subject_id: UUID) -> ColumnElement[bool]:
    return and_(DEPOSITS.c.subject_type == subject_type.value, DEPOSITS.c.subject_id == subject_id)


async def _held(
    session: AsyncSession, subject_type: SubjectType, subject_id: UUID, user_id: UUID
) -> tuple[Deposit | None, int]:
    """The user's deposit held for the subject (row locked on PostgreSQL), and how many
    deposits they ever left for it."""
    rows = (
        await session.execute(
            select(DEPOSITS)
            .where(_of_subject(subject_type, subject_id), DEPOSITS.c.user_id == user_id)
            .order_by(DEPOSITS.c.row_id)
            .with_for_update()
        )
    ).all()
    deposits = [Deposit(**row._mapping) for row in rows]
    held = next((d for d in deposits if d.status == DepositStatus.HELD), None)
    return held, len(deposits)


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
    """Make sure the user holds at least `amount_minor` as their deposit for the subject.

    A deposit already held that is large enough is kept (a retried use case takes nothing more);
    a smaller one is replaced by one of the full amount (a raised join); one that was released
    (the user left and joined again) is taken anew. InsufficientFunds if the wallet cannot cover
    it, which fails the caller's whole unit of work."""
    held, taken = await _held(session, subject_type, subject_id, user_id)
    if held is not None and held.amount_minor >= amount_minor:
        return held
    if held is not None:
        await _release(session, held, now=now)
    deposit = Deposit(
        user_id=user_id,
        subject_type=subject_type.value,
        subject_id=subject_id,
        amount_minor=amount_minor,
        currency=currency,
        hold_id=f"deposit:{subject_type.value}:{subject_id}:{user_id}:{taken + 1}",
        status=DepositStatus.HELD.value,
        created_at=now,
    )
    session.add(deposit)
    await session.flush()
    await ledger.hold(
        session,
        TransferSpec(
            id=deposit.hold_id,
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


async def _release(session: AsyncSession, deposit: Deposit, *, now: datetime) -> None:
    await session.execute(
        update(DEPOSITS)
        .where(DEPOSITS.c.id == deposit.id, DEPOSITS.c.status == DepositStatus.HELD.value)
        .values(status=DepositStatus.RELEASED.value, resolved_at=now)
    )
    await ledger.release(session, hold_id=deposit.hold_id, now=now)


async def release_after(
    session: AsyncSession,
    *,
    subject_type: SubjectType,
    subject_id: UUID,
    user_ids: Sequence[UUID],
    when: datetime,
) -> None:
    """The transaction completed: keep the users' deposits until `when` (the complaint window),
    then the `release_deposits` sweep gives them back unless a complaint against them is open."""
    await session.execute(
        update(DEPOSITS)
        .where(
            _of_subject(subject_type, subject_id),
            DEPOSITS.c.user_id.in_(list(user_ids)),
            DEPOSITS.c.status == DepositStatus.HELD.value,
        )
        .values(release_after=when)
    )


async def release_due_deposits(session: AsyncSession, *, now: datetime, limit: int) -> int:
    """Give back held deposits whose complaint window closed, except those of a user with an
    open complaint against them for that transaction (they wait for the decision)."""
    open_complaint = (
        select(COMPLAINTS.c.row_id)
        .join(TRANSACTIONS, TRANSACTIONS.c.row_id == COMPLAINTS.c.transaction_row_id)
        .where(
            TRANSACTIONS.c.subject_type == DEPOSITS.c.subject_type,
            TRANSACTIONS.c.subject_id == DEPOSITS.c.subject_id,
            COMPLAINTS.c.accused_id == DEPOSITS.c.user_id,
            COMPLAINTS.c.status == ComplaintStatus.OPEN.value,
        )
        .exists()
    )
    rows = (
        await session.execute(
            select(DEPOSITS)
            .where(
                DEPOSITS.c.status == DepositStatus.HELD.value,
                DEPOSITS.c.release_after <= now,
                ~open_complaint,
            )
            .order_by(DEPOSITS.c.release_after)
            .limit(limit)
        )
    ).all()
    for row in rows:
        await _release(session, Deposit(**row._mapping), now=now)
    return len(rows)


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
        await ledger.release(session, hold_id=hold_id, now=now)
    return len(hold_ids)


async def forfeit_deposits(
    session: AsyncSession,
    *,
    subject_type: SubjectType,
    subject_id: UUID,
    user_id: UUID,
    beneficiary_id: UUID | None,
    now: datetime,
    if_held: bool = False,
) -> int:
    """Take the user's held deposit for the subject and pay it to the beneficiary's wallet (None:
    the insurance fund); answers the amount. DepositNotHeld if there is none to take (0 with
    `if_held`: a policy that took no deposit has none to forfeit)."""
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
        if if_held:
            return 0
        raise DepositNotHeld("this user holds no deposit for that transaction")
    total_minor = 0
    for hold_id, amount_minor, currency in taken:
        held = await ledger.get_transfer(session, hold_id)
        if held is None or held.status != TransferStatus.PENDING:
            raise DepositNotHeld("this user's deposit expired before it could be forfeited")
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

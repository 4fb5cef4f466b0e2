"""Complaints: a party files against a counterparty; an admin upholds or rejects it, once."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import Table, or_, select, update
from sqlalchemy.exc import IntegrityError

from app.db import AsyncSession
from app.uow import UnitOfWork, use_case
from payments import ledger
from payments.records import TransferSpec, insurance_fund, wallet
from trust.audit import audit
from trust.deposits import forfeit_deposits
from trust.errors import (
    AlreadyComplained,
    ComplaintDecided,
    ComplaintNotFound,
    ConflictOfInterest,
    InvalidDecision,
)
from trust.models import (
    AuditAction,
    Complaint,
    ComplaintCategory,
    ComplaintStatus,
    PartyRole,
    SubjectType,
)
from trust.registry import TRANSACTIONS, counterparties, party_roles
from trust.reputation import USERS, add_to_reputation
from trust.text import required_text

COMPLAINTS: Table = Complaint.__table__  # type: ignore[attr-defined]

COMPLAINT_MAX_CHARS = 2_000


@use_case
async def file_complaint(
    uow: UnitOfWork,
    *,
    filer_id: UUID,
    subject_type: SubjectType,
    subject_id: UUID,
    against_user_id: UUID,
    category: ComplaintCategory,
    text: str,
    now: datetime,
) -> Complaint:
    """A party complains about a counterparty of a completed transaction, once."""
    async with uow:
        transaction, _ = await counterparties(
            uow.session,
            subject_type=subject_type,
            subject_id=subject_id,
            caller_id=filer_id,
            other_id=against_user_id,
        )
        assert transaction.row_id is not None
        complaint = Complaint(
            transaction_row_id=transaction.row_id,
            filer_id=filer_id,
            accused_id=against_user_id,
            category=category.value,
            text=required_text(text, max_chars=COMPLAINT_MAX_CHARS, field="text"),
            status=ComplaintStatus.OPEN.value,
            created_at=now,
        )
        uow.session.add(complaint)
        try:
            await uow.session.flush()
        except IntegrityError:
            raise AlreadyComplained("you already complained about this user here") from None
        await add_to_reputation(uow.session, {against_user_id: Counter(complaints_received=1)})
        await uow.commit()
    return complaint


class ComplaintView(msgspec.Struct, frozen=True, kw_only=True):
    """A complaint with what it is about and both parties' names."""

    complaint: Complaint
    subject_type: str
    subject_id: UUID
    #: The transaction's currency: what a payout is paid in (None: not on record).
    currency: str | None
    filer_display_name: str
    accused_display_name: str


def _complaint_query() -> Any:
    filer = USERS.alias("filer")
    accused = USERS.alias("accused")
    return (
        select(
            COMPLAINTS,
            TRANSACTIONS.c.subject_type,
            TRANSACTIONS.c.subject_id,
            TRANSACTIONS.c.currency,
            filer.c.display_name.label("filer_display_name"),
            accused.c.display_name.label("accused_display_name"),
        )
        .join(TRANSACTIONS, TRANSACTIONS.c.row_id == COMPLAINTS.c.transaction_row_id)
        .join(filer, filer.c.id == COMPLAINTS.c.filer_id)
        .join(accused, accused.c.id == COMPLAINTS.c.accused_id)
    )


def _complaint_view(row: Any) -> ComplaintView:
    values = dict(row._mapping)
    extra = {
        name: values.pop(name)
        for name in (
            "subject_type",
            "subject_id",
            "currency",
            "filer_display_name",
            "accused_display_name",
        )
    }
    return ComplaintView(complaint=Complaint(**values), **extra)


async def list_complaints(
    session: AsyncSession,
    *,
    party_id: UUID | None,
    status: ComplaintStatus | None,
    limit: int,
    before: int | None,
) -> list[ComplaintView]:
    """Complaints newest first: those a user filed or received, or (party_id None) all."""
    query = _complaint_query().order_by(COMPLAINTS.c.row_id.desc()).limit(limit)
    if party_id is not None:
        query = query.where(
            or_(COMPLAINTS.c.filer_id == party_id, COMPLAINTS.c.accused_id == party_id)
        )
    if status is not None:
        query = query.where(COMPLAINTS.c.status == status.value)
    if before is not None:
        query = query.where(COMPLAINTS.c.row_id < before)
    return [_complaint_view(row) for row in (await session.execute(query)).all()]


async def get_complaint(
    session: AsyncSession, *, complaint_id: UUID, viewer_id: UUID | None
) -> ComplaintView:
    """One complaint, if the viewer filed or received it (viewer None: an admin sees all)."""
    query = _complaint_query().where(COMPLAINTS.c.id == complaint_id)
    if viewer_id is not None:
        query = query.where(
            or_(COMPLAINTS.c.filer_id == viewer_id, COMPLAINTS.c.accused_id == viewer_id)
        )
    row = (await session.execute(query)).first()
    if row is None:
        raise ComplaintNotFound(f"no complaint {complaint_id}")
    return _complaint_view(row)


async def _payout_currency(
    session: AsyncSession, view: ComplaintView, requested: str | None
) -> str:
    """The currency of a payout: the protected pool's. Purchase protection pays a member of a
    protected pool whose complaint against its organizer is upheld; nothing else is paid out
    of the insurance fund, and never in another currency than the pool's."""
    complaint = view.complaint
    protected = (
        await session.execute(
            select(TRANSACTIONS.c.protected).where(
                TRANSACTIONS.c.row_id == complaint.transaction_row_id
            )
        )
    ).scalar_one()
    roles = await party_roles(
        session, complaint.transaction_row_id, [complaint.filer_id, complaint.accused_id]
    )
    if not (
        protected
        and roles.get(complaint.filer_id) is PartyRole.MEMBER
        and roles.get(complaint.accused_id) is PartyRole.ORGANIZER
    ):
        raise InvalidDecision(
            "a payout is only for a member's complaint against the organizer of a protected pool"
        )
    currency = view.currency
    if currency is None:  # registered before transactions recorded their currency
        if requested is None:
            raise InvalidDecision("name the payout's currency: the pool's is not on record")
        return requested
    if requested is not None and requested != currency:
        raise InvalidDecision(f"a payout is in the pool's currency, {currency}")
    return currency


@use_case
async def decide_complaint(
    uow: UnitOfWork,
    *,
    complaint_id: UUID,
    admin_id: UUID | None,
    actor: str,
    outcome: ComplaintStatus,
    reason: str,
    forfeit_deposit: bool,
    payout_minor: int,
    currency: str | None,
    now: datetime,
) -> ComplaintView:
    """Uphold or reject an open complaint, once. Upheld: the accused's reputation counts it, and
    in the same unit of work their deposit for the transaction may be forfeited to the filer and
    the filer paid out of the insurance fund (purchase protection)."""
    if outcome is ComplaintStatus.OPEN:
        raise InvalidDecision("the outcome is upheld or rejected")
    if outcome is ComplaintStatus.REJECTED and (forfeit_deposit or payout_minor):
        raise InvalidDecision("only an upheld complaint forfeits a deposit or pays out")
    reason = required_text(reason, max_chars=1_000, field="reason")
    async with uow:
        session = uow.session
        view = await get_complaint(session, complaint_id=complaint_id, viewer_id=None)
        complaint = view.complaint
        if admin_id in (complaint.filer_id, complaint.accused_id):
            raise ConflictOfInterest("an admin may not decide a complaint they are a party of")
        payout_currency: str | None = None
        if payout_minor:
            payout_currency = await _payout_currency(session, view, currency)
        decided = await session.execute(
            update(COMPLAINTS)
            .where(
                COMPLAINTS.c.id == complaint_id,
                COMPLAINTS.c.status == ComplaintStatus.OPEN.value,
            )
            .values(
                status=outcome.value, decided_at=now, decided_by=admin_id, decision_reason=reason
            )
            .returning(COMPLAINTS.c.row_id)
        )
        if decided.first() is None:
            raise ComplaintDecided("this complaint has already been decided")
        forfeited_minor = 0
        if outcome is ComplaintStatus.UPHELD:
            # Ledger accounts first, the accused's reputation row last: the order settlement uses.
            if forfeit_deposit:
                forfeited_minor = await forfeit_deposits(
                    session,
                    subject_type=SubjectType(view.subject_type),
                    subject_id=view.subject_id,
                    user_id=complaint.accused_id,
                    beneficiary_id=complaint.filer_id,
                    now=now,
                )
            if payout_currency is not None:
                await ledger.transfer(
                    session,
                    TransferSpec(
                        id=f"trust:complaint:{complaint.id}:payout",
                        debit=insurance_fund(payout_currency),
                        credit=wallet(complaint.filer_id, payout_currency),
                        amount_minor=payout_minor,
                        kind="protection_payout",
                        ref=f"complaint:{complaint.id}",
                    ),
                    now=now,
                )
            await add_to_reputation(session, {complaint.accused_id: Counter(complaints_upheld=1)})
        await session.execute(
            update(COMPLAINTS)
            .where(COMPLAINTS.c.id == complaint_id)
            .values(forfeited_minor=forfeited_minor, payout_minor=payout_minor)
        )
        await audit(
            session,
            actor_id=admin_id,
            actor=actor,
            action=AuditAction.DECIDE_COMPLAINT,
            target_id=complaint.id,
            reason=reason,
            detail=(
                f"{outcome}; forfeited {forfeited_minor}; "
                f"payout {payout_minor} {payout_currency or ''}".rstrip()
            ),
            now=now,
        )
        view = await get_complaint(session, complaint_id=complaint_id, viewer_id=None)
        await uow.commit()
    return view

"""The portable path (SQLite): payments/rules.py statement by statement, through SQLAlchemy.

Each step checks everything that can refuse it before it writes anything, so a refused step
leaves the transaction as it found it. SQLite runs one writer at a time (BEGIN IMMEDIATE), so
a check and the write after it cannot be raced.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, or_, select, update

from app.db import AsyncSession
from payments import rules
from payments.errors import InsufficientFunds, InvalidTransfer, TransferIdConflict
from payments.models import RESOLUTION_KIND, Account, Transfer, TransferStatus
from payments.records import TransferRecord, record, resolution_id

ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
TRANSFERS: Table = Transfer.__table__  # type: ignore[attr-defined]
_BALANCE_COLUMNS = rules.Balances._fields


async def get_transfer(session: AsyncSession, transfer_id: str) -> TransferRecord | None:
    row = (await session.execute(select(*TRANSFERS.c).where(TRANSFERS.c.id == transfer_id))).first()
    return None if row is None else record(row._mapping)


def same_transfer(row: TransferRecord, values: dict[str, Any]) -> bool:
    fields = ("debit_account_id", "credit_account_id", "amount_minor", "currency", "kind", "ref")
    return all(getattr(row, f) == values[f] for f in fields) and row.is_hold == values["is_hold"]


async def apply(
    session: AsyncSession, account_id: int, delta: rules.Balances, *, limit_minor: int | None = None
) -> bool:
    """Add `delta` to an account; with `limit_minor`, only if a limited account can afford it."""
    columns = ACCOUNTS.c
    statement = (
        update(ACCOUNTS)
        .where(columns.id == account_id)
        .values(
            {
                name: columns[name] + amount
                for name, amount in zip(_BALANCE_COLUMNS, delta, strict=True)
                if amount
            }
        )
    )
    if limit_minor is not None:
        statement = statement.where(
            or_(
                columns.debits_must_not_exceed_credits.is_(False),
                columns.credits_posted - columns.debits_posted - columns.debits_pending
                >= limit_minor,
            )
        )
    result: Any = await session.execute(statement)
    return bool(result.rowcount == 1)


async def insert(session: AsyncSession, values: dict[str, Any]) -> TransferRecord:
    row_id = (
        await session.execute(TRANSFERS.insert().values(**values).returning(TRANSFERS.c.row_id))
    ).scalar_one()
    return record({**{c.name: None for c in TRANSFERS.c}, **values, "row_id": row_id})


async def stage(session: AsyncSession, values: dict[str, Any]) -> TransferRecord:
    """Write a transfer or hold (ids resolved); the same id again replays the first."""
    existing = await get_transfer(session, values["id"])
    if existing is not None:
        if not same_transfer(existing, values):
            raise TransferIdConflict(f"transfer id {values['id']!r} was used for another transfer")
        return existing  # exactly once: the first call moved the money
    amount = values["amount_minor"]
    debit, credit = rules.staged(amount, is_hold=values["is_hold"])
    if not await apply(session, values["debit_account_id"], debit, limit_minor=amount):
        raise InsufficientFunds(
            f"the source account has less than {amount} {values['currency']} minor units available"
        )
    await apply(session, values["credit_account_id"], credit)
    return await insert(session, values)


async def resolve(
    session: AsyncSession,
    *,
    hold_id: str,
    status: TransferStatus,
    amount_minor: int | None,
    now: datetime,
) -> TransferRecord | None:
    """Resolve a pending (and, for a capture, unexpired; for an expiry, due) hold; None if it
    is not in that state."""
    conditions = [TRANSFERS.c.id == hold_id, TRANSFERS.c.is_hold, TRANSFERS.c.status == "pending"]
    if status is TransferStatus.POSTED:
        conditions.append(or_(TRANSFERS.c.expires_at.is_(None), TRANSFERS.c.expires_at > now))
    elif status is TransferStatus.EXPIRED:
        conditions.append(TRANSFERS.c.expires_at <= now)
    hold = (await session.execute(select(*TRANSFERS.c).where(and_(*conditions)))).first()
    if hold is None:
        return None
    held = hold.amount_minor
    amount = held if amount_minor is None else amount_minor
    if not 0 < amount <= held:
        raise InvalidTransfer(f"capture between 1 and the held {held} minor units")
    await session.execute(
        update(TRANSFERS).where(TRANSFERS.c.id == hold_id).values(status=status.value)
    )
    debit, credit = rules.resolved(held, amount if status is TransferStatus.POSTED else 0)
    await apply(session, hold.debit_account_id, debit)
    await apply(session, hold.credit_account_id, credit)
    return await insert(
        session,
        {
            "id": resolution_id(hold_id, status),
            "debit_account_id": hold.debit_account_id,
            "credit_account_id": hold.credit_account_id,
            "amount_minor": amount,
            "currency": hold.currency,
            "kind": RESOLUTION_KIND[status].value,
            "ref": hold.ref,
            "status": status.value,
            "is_hold": False,
            "parent_id": hold_id,
            "created_at": now,
        },
    )

"""`copool ledger verify`: recompute every hash, party and balance from the transfers alone."""

from __future__ import annotations

import msgspec
from sqlalchemy import Table, and_, func, not_, or_, select
from sqlalchemy.orm import aliased

from app.db import AsyncSession, on_postgres
from payments.chain import GENESIS_HASH, first_broken_link
from payments.chain_writer import ENTRY_COLUMNS, chain_entry, chain_head
from payments.models import Account, Transfer, TransferKind, TransferStatus
from payments.rules import Balances

TRANSFERS: Table = Transfer.__table__  # type: ignore[attr-defined]
ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
VERIFY_COLUMNS = [*ENTRY_COLUMNS, TRANSFERS.c.seq, TRANSFERS.c.hash]


class VerifyReport(msgspec.Struct):
    ok: bool
    entries: int
    unchained: int
    head_seq: int
    head_hash: str
    problem: str | None = None


async def verify_ledger(session: AsyncSession, *, page: int = 5_000) -> VerifyReport:
    """Recompute every hash and every balance from the transfers; report the first bad entry.

    Every read sees one snapshot (on PostgreSQL a REPEATABLE READ READ ONLY transaction, begun
    here if the session has none yet), so writers working meanwhile cause no false alarm.
    """
    if on_postgres(session) and not session.in_transaction():
        await session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )
    head_seq, head_hash = await chain_head(session)
    previous, next_seq, entries = GENESIS_HASH, 1, 0
    while True:
        rows = (
            await session.execute(
                select(*VERIFY_COLUMNS)
                .where(TRANSFERS.c.seq >= next_seq)
                .order_by(TRANSFERS.c.seq)
                .limit(page)
            )
        ).all()
        if not rows:
            break
        broken = first_broken_link(
            [(chain_entry(r, r.seq), r.hash) for r in rows], previous, first_seq=next_seq
        )
        if broken is not None:
            return VerifyReport(
                False, entries, 0, head_seq, head_hash, f"entry {broken[0]}: {broken[1]}"
            )
        previous, next_seq, entries = rows[-1].hash, rows[-1].seq + 1, entries + len(rows)
    unchained = (
        await session.execute(
            select(func.count())
            .select_from(TRANSFERS)
            .where(TRANSFERS.c.seq.is_(None), not_(TRANSFERS.c.is_hold))
        )
    ).scalar_one()
    report = VerifyReport(True, entries, unchained, head_seq, head_hash)
    if (entries, previous) != (head_seq, head_hash):
        report.ok, report.problem = False, f"head says seq {head_seq}, the chain ends at {entries}"
    elif (disguised := await _first_disguised_hold(session)) is not None:
        report.ok, report.problem = False, disguised
    elif (wrong := await _first_misdirected_transfer(session)) is not None:
        report.ok, report.problem = False, wrong
    elif (mismatch := await _first_balance_mismatch(session)) is not None:
        report.ok, report.problem = False, mismatch
    return report


async def _first_disguised_hold(session: AsyncSession) -> str | None:
    """A hold never enters the chain, and a resolved hold always has its resolution entry: a
    posted transfer turned into a "hold" to hide it fails one of the two."""
    chained = (
        await session.execute(
            select(TRANSFERS.c.id).where(TRANSFERS.c.is_hold, TRANSFERS.c.seq.is_not(None)).limit(1)
        )
    ).first()
    if chained is not None:
        return f"transfer {chained[0]}: a hold with a place in the chain"
    resolution = aliased(TRANSFERS)
    orphan = (
        await session.execute(
            select(TRANSFERS.c.id)
            .outerjoin(
                resolution,
                and_(
                    resolution.c.parent_id == TRANSFERS.c.id,
                    resolution.c.status == TRANSFERS.c.status,
                ),
            )
            .where(
                TRANSFERS.c.is_hold,
                TRANSFERS.c.status != TransferStatus.PENDING.value,
                resolution.c.id.is_(None),
            )
            .limit(1)
        )
    ).first()
    if orphan is not None:
        return f"transfer {orphan[0]}: a resolved hold without its resolution entry"
    return None


async def _first_misdirected_transfer(session: AsyncSession) -> str | None:
    """A transfer whose accounts are not the ones its caller named (or, for a resolution or a
    refund, not its parent's)."""
    debit, credit = aliased(ACCOUNTS), aliased(ACCOUNTS)
    named = (
        await session.execute(
            select(TRANSFERS.c.id, debit.c.key, credit.c.key)
            .join(debit, debit.c.id == TRANSFERS.c.debit_account_id)
            .join(credit, credit.c.id == TRANSFERS.c.credit_account_id)
            .where(
                TRANSFERS.c.debit_key.is_not(None),
                or_(debit.c.key != TRANSFERS.c.debit_key, credit.c.key != TRANSFERS.c.credit_key),
            )
            .limit(1)
        )
    ).first()
    if named is not None:
        return (
            f"transfer {named[0]}: moved money between {named[1]} and {named[2]}, "
            "not between the accounts it names"
        )
    parent = aliased(TRANSFERS)
    refund = TRANSFERS.c.kind == TransferKind.REFUND.value
    derived = (
        await session.execute(
            select(TRANSFERS.c.id)
            .join(parent, parent.c.id == TRANSFERS.c.parent_id)
            .where(
                or_(
                    and_(
                        not_(refund),
                        or_(
                            TRANSFERS.c.debit_account_id != parent.c.debit_account_id,
                            TRANSFERS.c.credit_account_id != parent.c.credit_account_id,
                        ),
                    ),
                    and_(
                        refund,
                        or_(
                            TRANSFERS.c.debit_account_id != parent.c.credit_account_id,
                            TRANSFERS.c.credit_account_id != parent.c.debit_account_id,
                        ),
                    ),
                )
            )
            .limit(1)
        )
    ).first()
    if derived is not None:
        return f"transfer {derived[0]}: its accounts are not those of the transfer it resolves"
    return None


async def replayed_balances(session: AsyncSession) -> dict[int, Balances]:
    """Every account's balances, rebuilt from the transfers alone."""
    balances: dict[int, list[int]] = {}
    posted = and_(not_(TRANSFERS.c.is_hold), TRANSFERS.c.status == TransferStatus.POSTED.value)
    pending = and_(TRANSFERS.c.is_hold, TRANSFERS.c.status == TransferStatus.PENDING.value)
    for slot, side, condition in (
        (0, TRANSFERS.c.debit_account_id, pending),
        (1, TRANSFERS.c.debit_account_id, posted),
        (2, TRANSFERS.c.credit_account_id, pending),
        (3, TRANSFERS.c.credit_account_id, posted),
    ):
        rows = await session.execute(
            select(side, func.sum(TRANSFERS.c.amount_minor)).where(condition).group_by(side)
        )
        for account_id, total in rows.all():
            balances.setdefault(account_id, [0, 0, 0, 0])[slot] = int(total)
    return {k: Balances(*v) for k, v in balances.items()}


async def _first_balance_mismatch(session: AsyncSession) -> str | None:
    replayed = await replayed_balances(session)
    accounts = await session.execute(
        select(
            ACCOUNTS.c.id,
            ACCOUNTS.c.key,
            ACCOUNTS.c.currency,
            ACCOUNTS.c.debits_pending,
            ACCOUNTS.c.debits_posted,
            ACCOUNTS.c.credits_pending,
            ACCOUNTS.c.credits_posted,
        ).order_by(ACCOUNTS.c.id)
    )
    totals: dict[str, int] = {}
    for account_id, key, currency, *sums in accounts.all():
        stored = Balances(*sums)
        if stored != replayed.get(account_id, Balances()):
            return f"account {key}: stored {tuple(stored)}, replayed {replayed.get(account_id)}"
        totals[currency] = totals.get(currency, 0) + stored.credits_posted - stored.debits_posted
    unbalanced = {c: t for c, t in totals.items() if t != 0}
    return f"posted balances do not sum to zero: {unbalanced}" if unbalanced else None

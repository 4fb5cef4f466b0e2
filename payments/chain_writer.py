"""The chain writer: appends committed, unchained entries to the hash chain in batches.

Money never waits for the chain: transfers commit unchained, and a writer (a background task in
every app process, plus the worker's sweep) chains them while holding the single head row's
lock, so concurrent writers cannot fork the chain. Each batch is its own unit of work.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from sqlalchemy import Table, bindparam, not_, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.db import AsyncSession, SessionMaker, on_postgres
from payments import postgres
from payments.chain import GENESIS_HASH, ChainEntry, entry_hash, epoch_us
from payments.models import ChainHead, Transfer

log = structlog.get_logger("copool.ledger")

TRANSFERS: Table = Transfer.__table__  # type: ignore[attr-defined]
HEAD: Table = ChainHead.__table__  # type: ignore[attr-defined]
CHAIN_BATCH = 2_000

ENTRY_COLUMNS = [
    TRANSFERS.c.row_id,
    TRANSFERS.c.id,
    TRANSFERS.c.debit_account_id,
    TRANSFERS.c.credit_account_id,
    TRANSFERS.c.amount_minor,
    TRANSFERS.c.currency,
    TRANSFERS.c.kind,
    TRANSFERS.c.ref,
    TRANSFERS.c.status,
    TRANSFERS.c.parent_id,
    TRANSFERS.c.created_at,
]


def chain_entry(row: Any, seq: int) -> ChainEntry:
    return ChainEntry(
        seq=seq,
        id=row.id,
        debit_account_id=row.debit_account_id,
        credit_account_id=row.credit_account_id,
        amount_minor=row.amount_minor,
        currency=row.currency,
        kind=row.kind,
        ref=row.ref,
        status=row.status,
        parent_id=row.parent_id,
        created_at_us=epoch_us(row.created_at),
    )


async def chain_pending(session: AsyncSession, *, limit: int = CHAIN_BATCH) -> int:
    """Chain up to `limit` committed entries in the session's transaction (the caller commits);
    answers 0 at once if another writer holds the head."""
    head = (
        await session.execute(
            select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1).with_for_update(skip_locked=True)
        )
    ).first()
    if head is None:  # another writer holds the head: it will chain what is committed
        return 0
    rows = (
        await session.execute(
            select(*ENTRY_COLUMNS)
            .where(TRANSFERS.c.seq.is_(None), not_(TRANSFERS.c.is_hold))
            .order_by(TRANSFERS.c.row_id)
            .limit(limit)
        )
    ).all()
    if not rows:
        return 0
    seq, previous = head.seq, head.hash
    row_ids, seqs, hashes = [], [], []
    for row in rows:
        seq += 1
        previous = entry_hash(previous, chain_entry(row, seq))
        row_ids.append(row.row_id)
        seqs.append(seq)
        hashes.append(previous)
    if on_postgres(session):  # one statement for the whole batch
        connection = await session.connection()
        await connection.exec_driver_sql(postgres.CHAIN_UPDATE, (row_ids, seqs, hashes))
    else:
        await session.execute(
            update(TRANSFERS)
            .where(TRANSFERS.c.row_id == bindparam("b_row_id"))
            .values(seq=bindparam("b_seq"), hash=bindparam("b_hash")),
            [
                {"b_row_id": r, "b_seq": q, "b_hash": h}
                for r, q, h in zip(row_ids, seqs, hashes, strict=True)
            ],
            execution_options={"synchronize_session": False},
        )
    await session.execute(update(HEAD).where(HEAD.c.id == 1).values(seq=seq, hash=previous))
    return len(rows)


async def chain_batch(sessionmaker: SessionMaker, *, limit: int = CHAIN_BATCH) -> int:
    """One batch as its own unit of work."""
    async with sessionmaker() as session:
        chained = await chain_pending(session, limit=limit)
        await session.commit()
        return chained


async def chain_all(sessionmaker: SessionMaker) -> int:
    """Chain until nothing committed is left unchained (or another writer is busy)."""
    total = 0
    while chained := await chain_batch(sessionmaker):
        total += chained
    return total


async def chain_head(session: AsyncSession) -> tuple[int, str]:
    """The newest chained entry's (seq, hash); a read."""
    head = (await session.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1))).first()
    return (head.seq, head.hash) if head else (0, GENESIS_HASH)


async def run_chain_writer(sessionmaker: SessionMaker, *, interval_s: float) -> None:
    """Forever: chain what is committed; sleep `interval_s` when caught up (or on an error)."""
    while True:
        try:
            chained = await chain_batch(sessionmaker)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("ledger chaining failed; will retry", error=str(exc))
            chained = 0
        if chained < CHAIN_BATCH:
            await asyncio.sleep(interval_s)

"""The PostgreSQL path: each ledger step is one call of a PL/pgSQL function (one round trip).

The functions (migrations 0003-0007) apply payments/rules.py inside the database. Their own
SQLSTATEs: CP402 insufficient funds, CP404 account not open, CP409 transfer id reused, CP422
invalid amount.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import DBAPIError

from app.db import AsyncSession
from payments.batcher import BatchedCall
from payments.errors import (
    HoldNotPending,
    InsufficientFunds,
    InvalidTransfer,
    PaymentError,
    TransferIdConflict,
)
from payments.records import TransferRecord, record

STAGE = "SELECT * FROM ledger_stage_keyed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
RESOLVE = "SELECT * FROM ledger_resolve($1, $2, $3, $4)"
#: Lock these accounts (by id) in ascending order, so use cases cannot deadlock each other.
LOCK = "SELECT 1 FROM ledger_accounts WHERE id = ANY($1::integer[]) ORDER BY id FOR NO KEY UPDATE"
CHAIN_UPDATE = (
    "UPDATE ledger_transfers t SET seq = u.seq, hash = u.hash "
    "FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(row_id, seq, hash) "
    "WHERE t.row_id = u.row_id"
)

STAGE_BATCH = BatchedCall(
    "SELECT outcome, (transfer).* FROM ledger_stage_batch_keyed($1::text[], $2::text[], "
    "$3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::boolean[], "
    "$9::timestamptz[], $10::timestamptz[])",
    (
        "id",
        "debit_key",
        "credit_key",
        "amount_minor",
        "currency",
        "kind",
        "ref",
        "is_hold",
        "expires_at",
        "created_at",
    ),
)
RESOLVE_BATCH = BatchedCall(
    "SELECT outcome, (transfer).* FROM ledger_resolve_batch($1::text[], $2::text[], "
    "$3::bigint[], $4::timestamptz[])",
    ("hold_id", "status", "amount_minor", "now"),
)


#: Holds voided and holds staged as one set-based statement (migration 0012) in the caller's
#: transaction, its accounts locked first. The answer counts what happened; `replace_set` raises
#: on any shortfall, and the caller rolls back.
REPLACE_SET = "SELECT * FROM ledger_replace_set($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
#: Lock the accounts of these transfers (by transfer id) in ascending order.
LOCK_OF_TRANSFERS = (
    "SELECT 1 FROM ledger_accounts WHERE id IN ("
    "SELECT debit_account_id FROM ledger_transfers WHERE id = ANY ($1::text[]) UNION "
    "SELECT credit_account_id FROM ledger_transfers WHERE id = ANY ($1::text[])) "
    "ORDER BY id FOR NO KEY UPDATE"
)


class Outcome(StrEnum):
    """What a batch function answers for each element (our SQLSTATEs, or success)."""

    OK = "ok"
    INSUFFICIENT_FUNDS = "CP402"
    ACCOUNT_NOT_OPEN = "CP404"
    ID_CONFLICT = "CP409"
    INVALID_AMOUNT = "CP422"
    UNCLAIMED = "unclaimed"  # a resolution whose hold was not pending (or not due)


ERRORS: dict[str, type[PaymentError]] = {
    Outcome.INSUFFICIENT_FUNDS: InsufficientFunds,
    Outcome.ID_CONFLICT: TransferIdConflict,
    Outcome.INVALID_AMOUNT: InvalidTransfer,
}


def sqlstate(exc: DBAPIError) -> str | None:
    cause = exc.orig.__cause__ if exc.orig is not None else None
    return getattr(cause, "sqlstate", None)


async def call(session: AsyncSession, sql: str, params: tuple[Any, ...]) -> TransferRecord | None:
    """Run a ledger function in the session's transaction; map its SQLSTATEs to our errors."""
    connection = await session.connection()
    try:
        result = await connection.exec_driver_sql(sql, params)
    except DBAPIError as exc:
        error = ERRORS.get(sqlstate(exc) or "")
        if error is None:
            raise
        cause = exc.orig.__cause__ if exc.orig is not None else None
        raise error(str(getattr(cause, "message", ""))) from None
    row = result.mappings().first()
    return record(row) if row is not None and row["id"] is not None else None


async def replace_set(
    session: AsyncSession,
    void_ids: list[str],
    rows: list[dict[str, Any]],
    ids: dict[str, int],
    now: datetime,
    *,
    lock: bool = True,
) -> None:
    """Void `void_ids` and stage these holds (row values, accounts open: `ids` by key) as one
    statement; `lock` first locks their accounts in id order (unless the caller already has)."""
    connection = await session.connection()
    if lock:
        if void_ids:
            await connection.exec_driver_sql(LOCK_OF_TRANSFERS, (void_ids,))
        await lock_accounts(session, list(ids.values()))
    params = replace_set_params(void_ids, rows, ids, now)
    counts = (await connection.exec_driver_sql(REPLACE_SET, params)).mappings().one()
    if counts["voided"] < len(set(void_ids)):
        raise HoldNotPending("a hold of this batch is not pending")
    if counts["staged"] < len(rows):
        raise TransferIdConflict("a hold of this batch reuses the id of an existing transfer")
    if counts["applied"] < counts["accounts"]:
        raise InsufficientFunds("a source account cannot afford its holds in this batch")


def replace_set_params(
    void_ids: list[str], rows: list[dict[str, Any]], ids: dict[str, int], now: datetime
) -> tuple[Any, ...]:
    """`ledger_replace_set`'s arguments: the holds' columns (account ids from `ids` by key), the
    time, the holds to void."""
    return (
        [row["id"] for row in rows],
        [ids[row["debit_key"]] for row in rows],
        [ids[row["credit_key"]] for row in rows],
        [row["debit_key"] for row in rows],
        [row["credit_key"] for row in rows],
        [row["amount_minor"] for row in rows],
        [row["currency"] for row in rows],
        [row["kind"] for row in rows],
        [row["ref"] for row in rows],
        [row["expires_at"] for row in rows],
        now,
        void_ids,
    )


async def lock_accounts(session: AsyncSession, account_ids: list[int]) -> None:
    connection = await session.connection()
    await connection.exec_driver_sql(LOCK, (sorted(set(account_ids)),))


def stage_params(values: dict[str, Any], now: datetime) -> tuple[Any, ...]:
    return (
        values["id"],
        values["debit_key"],
        values["credit_key"],
        values["amount_minor"],
        values["currency"],
        values["kind"],
        values["ref"],
        values["is_hold"],
        values["expires_at"],
        now,
    )

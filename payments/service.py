"""Ledger use cases: transfer, hold, capture, void, refund, expire, chain, verify.

Every function that moves money runs in one transaction and commits it. Balance limits are
conditional UPDATEs (a CHECK constraint backs them up); transfer ids are unique, so a retried
call finds the first result and moves nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from sqlalchemy import Table, and_, bindparam, func, not_, or_, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import col, select

from app.db import AsyncSession, dialect_insert
from payments.batcher import RESOLVE, STAGE, batcher_for
from payments.chain import GENESIS_HASH, ChainEntry, entry_hash, epoch_us, first_broken_link
from payments.errors import (
    CurrencyMismatch,
    HoldExpired,
    HoldNotPending,
    InsufficientFunds,
    InvalidAmount,
    PaymentDeclined,
    PaymentError,
    RefundExceedsCaptured,
    TransferIdConflict,
    TransferNotFound,
    UnknownCurrency,
)
from payments.funding import FundingProvider
from payments.models import Account, AccountKind, ChainHead, Transfer, TransferStatus
from payments.money import MAX_AMOUNT_MINOR, is_supported_currency

ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
TRANSFERS: Table = Transfer.__table__  # type: ignore[attr-defined]
CHAIN_BATCH = 2_000
EXPIRY_BATCH = 500
MAX_TRANSFER_ID_CHARS = 120


# --- accounts --------------------------------------------------------------------------------


class AccountRef(msgspec.Struct, frozen=True):
    """Names an account; it is opened the first time money moves through it."""

    key: str
    kind: AccountKind
    currency: str
    owner_id: UUID | None = None
    #: debits_must_not_exceed_credits: it can never go below zero (counting pending debits).
    limited: bool = True


def wallet(user_id: UUID, currency: str) -> AccountRef:
    return AccountRef(f"wallet:{user_id}:{currency}", AccountKind.WALLET, currency, user_id)


def escrow(kind: AccountKind, subject_id: UUID | str, currency: str) -> AccountRef:
    return AccountRef(f"{kind.value}:{subject_id}:{currency}", kind, currency)


def platform_revenue(currency: str) -> AccountRef:
    return AccountRef(f"platform_revenue:{currency}", AccountKind.PLATFORM_REVENUE, currency)


def external_funding(provider: str, currency: str) -> AccountRef:
    """The provider's side of top-ups and withdrawals: money entering or leaving copool."""
    return AccountRef(
        f"external_funding:{provider}:{currency}",
        AccountKind.EXTERNAL_FUNDING,
        currency,
        limited=False,
    )


# Account keys never change their id inside one database, so ids are cached per database; an
# account opened by a transaction is cached only once that transaction has committed.
_account_ids: dict[tuple[str, str], int] = {}
_OPENED = "ledger_opened_accounts"


def _database(session: AsyncSession) -> str:
    return str(getattr(session.bind, "url", ""))


async def _open_accounts(
    session: AsyncSession, refs: Sequence[AccountRef], now: datetime
) -> dict[str, int]:
    """Ids of these accounts, opening the missing ones (concurrent openers are harmless)."""
    database = _database(session)
    opened: dict[str, int] = session.info.setdefault(_OPENED, {})
    ids = {}
    for ref in refs:
        known = _account_ids.get((database, ref.key)) or opened.get(ref.key)
        if known is not None:
            ids[ref.key] = known
    missing = {r.key: r for r in refs if r.key not in ids}
    for ref in missing.values():
        await session.exec(
            dialect_insert(session, ACCOUNTS)
            .values(
                key=ref.key,
                kind=ref.kind.value,
                currency=ref.currency,
                owner_id=ref.owner_id,
                debits_must_not_exceed_credits=ref.limited,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["key"])
        )
    if missing:
        rows = await session.exec(
            select(ACCOUNTS.c.key, ACCOUNTS.c.id).where(ACCOUNTS.c.key.in_(list(missing)))
        )
        for key, account_id in rows.all():
            ids[key] = opened[key] = account_id
    return ids


async def _rollback(session: AsyncSession) -> None:
    session.info.pop(_OPENED, None)
    await session.rollback()


async def _move(
    session: AsyncSession,
    account_id: int,
    *,
    debits_pending: int = 0,
    debits_posted: int = 0,
    credits_pending: int = 0,
    credits_posted: int = 0,
    require_available: int | None = None,
) -> bool:
    """Apply balance deltas; with require_available, only if a limited account can afford it."""
    columns = ACCOUNTS.c
    deltas = {
        "debits_pending": debits_pending,
        "debits_posted": debits_posted,
        "credits_pending": credits_pending,
        "credits_posted": credits_posted,
    }
    statement = (
        update(ACCOUNTS)
        .where(columns.id == account_id)
        .values({name: columns[name] + delta for name, delta in deltas.items() if delta})
    )
    if require_available is not None:
        statement = statement.where(
            or_(
                columns.debits_must_not_exceed_credits.is_(False),
                columns.credits_posted - columns.debits_posted - columns.debits_pending
                >= require_available,
            )
        )
    result: Any = await session.exec(statement)
    return bool(result.rowcount == 1)


# --- transfers -------------------------------------------------------------------------------


class TransferSpec(msgspec.Struct, frozen=True):
    """A transfer to make: `id` is its idempotency key."""

    id: str
    debit: AccountRef
    credit: AccountRef
    amount_minor: int
    kind: str
    ref: str
    #: For holds: when the sweep voids it (status `expired`) if nobody captured it.
    expires_at: datetime | None = None


class TransferRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A transfer as stored: an immutable snapshot, detached from any session."""

    row_id: int
    id: str
    debit_account_id: int
    credit_account_id: int
    amount_minor: int
    currency: str
    kind: str
    ref: str
    status: str
    is_hold: bool
    created_at: datetime
    parent_id: str | None = None
    expires_at: datetime | None = None
    refunded_minor: int = 0
    seq: int | None = None
    hash: str | None = None


_RECORD_FIELDS = TransferRecord.__struct_fields__


def _record(row: Any) -> TransferRecord:
    return TransferRecord(**{name: row[name] for name in _RECORD_FIELDS})


def _validate(spec: TransferSpec) -> None:
    if not 0 < len(spec.id) <= MAX_TRANSFER_ID_CHARS:
        raise InvalidAmount(f"a transfer id has 1 to {MAX_TRANSFER_ID_CHARS} characters")
    if not 0 < spec.amount_minor <= MAX_AMOUNT_MINOR:
        raise InvalidAmount(f"amount_minor must be between 1 and {MAX_AMOUNT_MINOR}")
    for currency in (spec.debit.currency, spec.credit.currency):
        if not is_supported_currency(currency):
            raise UnknownCurrency(f"unsupported currency {currency!r}")
    if spec.debit.currency != spec.credit.currency:
        raise CurrencyMismatch("both accounts of a transfer must hold the same currency")
    if spec.debit.key == spec.credit.key:
        raise InvalidAmount("a transfer needs two different accounts")


def _same_transfer(row: TransferRecord, values: dict[str, Any]) -> bool:
    fields = ("debit_account_id", "credit_account_id", "amount_minor", "currency", "kind", "ref")
    return all(getattr(row, f) == values[f] for f in fields) and row.is_hold == values["is_hold"]


# Balances change through Core UPDATEs, so ORM reads of accounts must refresh what they load.
_FRESH = {"populate_existing": True}


async def get_transfer(session: AsyncSession, transfer_id: str) -> TransferRecord | None:
    row = (await session.exec(select(*TRANSFERS.c).where(TRANSFERS.c.id == transfer_id))).first()
    return None if row is None else _record(row._mapping)


# --- PostgreSQL: one round trip per transfer (functions from migration 0003) ------------------

_PG_STAGE = "SELECT * FROM ledger_stage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
_PG_RESOLVE = "SELECT * FROM ledger_resolve($1, $2, $3, $4)"
_PG_ERRORS: dict[str, type[PaymentError]] = {
    "CP402": InsufficientFunds,
    "CP409": TransferIdConflict,
    "CP422": InvalidAmount,
}


def _on_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _group_committed(session: AsyncSession) -> bool:
    """On PostgreSQL, a use case that is one ledger call goes through the process's group commit.

    Only when the session has no transaction of its own under way: the call is then atomic by
    itself and needs none (nor BEGIN/COMMIT round trips, nor even a connection of the session).
    """
    return _on_postgres(session) and not session.in_transaction()


async def _call_postgres(
    session: AsyncSession, sql: str, params: tuple[Any, ...]
) -> TransferRecord | None:
    """Run a ledger function in the session's transaction; map its SQLSTATEs to our errors."""
    connection = await session.connection()
    try:
        result = await connection.exec_driver_sql(sql, params)
    except DBAPIError as exc:
        cause = exc.orig.__cause__ if exc.orig is not None else None
        error = _PG_ERRORS.get(str(getattr(cause, "sqlstate", "")))
        if error is None:
            raise
        raise error(str(getattr(cause, "message", ""))) from None
    row = result.mappings().first()
    return _record(row) if row is not None and row["id"] is not None else None


# --- portable path (SQLite): the same rules as the functions, statement by statement ----------


async def _insert_transfer(session: AsyncSession, **values: Any) -> int | None:
    """Insert unless the id exists; the new row id, or None if the id was taken."""
    written = (
        await session.exec(
            dialect_insert(session, TRANSFERS)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(TRANSFERS.c.row_id)
        )
    ).first()
    return None if written is None else int(written[0])


async def _stage_portable(session: AsyncSession, values: dict[str, Any]) -> TransferRecord:
    row_id = await _insert_transfer(session, **values)
    if row_id is None:
        existing = await get_transfer(session, values["id"])
        if existing is None or not _same_transfer(existing, values):
            raise TransferIdConflict(f"transfer id {values['id']!r} was used for another transfer")
        return existing  # exactly once: the first call moved the money
    field = "pending" if values["is_hold"] else "posted"
    amount, debit_id = values["amount_minor"], values["debit_account_id"]
    # Lock rows in id order so that two transfers between the same accounts cannot deadlock.
    for account_id in sorted((debit_id, values["credit_account_id"])):
        if account_id == debit_id:
            if not await _move(
                session, account_id, **{f"debits_{field}": amount}, require_available=amount
            ):
                raise InsufficientFunds(
                    f"the source account has less than {amount} {values['currency']} "
                    "minor units available"
                )
        else:
            await _move(session, account_id, **{f"credits_{field}": amount})
    return TransferRecord(row_id=row_id, **values)


async def _values(
    session: AsyncSession, spec: TransferSpec, *, is_hold: bool, now: datetime
) -> dict[str, Any]:
    """The row a spec becomes (opening its accounts on first use)."""
    _validate(spec)
    ids = await _open_accounts(session, [spec.debit, spec.credit], now)
    return {
        "id": spec.id,
        "debit_account_id": ids[spec.debit.key],
        "credit_account_id": ids[spec.credit.key],
        "amount_minor": spec.amount_minor,
        "currency": spec.debit.currency,
        "kind": spec.kind,
        "ref": spec.ref,
        "status": TransferStatus.PENDING.value if is_hold else TransferStatus.POSTED.value,
        "is_hold": is_hold,
        "expires_at": spec.expires_at if is_hold else None,
        "created_at": now,
    }


async def _stage(
    session: AsyncSession, spec: TransferSpec, *, is_hold: bool, now: datetime
) -> TransferRecord:
    """Write one transfer and its balance effects in the open transaction."""
    values = await _values(session, spec, is_hold=is_hold, now=now)
    if not _on_postgres(session):
        return await _stage_portable(session, values)
    staged = await _call_postgres(
        session,
        _PG_STAGE,
        (
            spec.id,
            values["debit_account_id"],
            values["credit_account_id"],
            spec.amount_minor,
            values["currency"],
            spec.kind,
            spec.ref,
            is_hold,
            values["expires_at"],
            now,
        ),
    )
    assert staged is not None, "ledger_stage always answers a row"
    return staged


async def _commit(session: AsyncSession) -> None:
    try:
        await session.commit()
    except IntegrityError as exc:  # a CHECK constraint caught what no UPDATE should have let by
        await _rollback(session)
        raise InsufficientFunds("the ledger refused a balance limit violation") from exc
    database = _database(session)
    for key, account_id in session.info.pop(_OPENED, {}).items():
        _account_ids[(database, key)] = account_id


async def _stage_batched(
    session: AsyncSession, spec: TransferSpec, *, is_hold: bool, now: datetime
) -> TransferRecord:
    """One independent transfer through this process's group commit (PostgreSQL)."""
    database = _database(session)
    if any((database, ref.key) not in _account_ids for ref in (spec.debit, spec.credit)):
        # Opening an account is idempotent: let it commit on its own, before the batch uses it.
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    try:
        values = await _values(session, spec, is_hold=is_hold, now=now)
    except BaseException:
        await _rollback(session)
        raise
    await _commit(session)  # the accounts are committed: remember their ids
    outcome, row = await batcher_for(session.bind, STAGE).submit(values)  # type: ignore[arg-type]
    if outcome == "CP402":
        raise InsufficientFunds(
            f"the source account has less than {spec.amount_minor} {values['currency']} "
            "minor units available"
        )
    if outcome == "CP409":
        raise TransferIdConflict(f"transfer id {spec.id!r} was used for another transfer")
    return _record(row)


async def post_linked(
    session: AsyncSession, specs: Sequence[TransferSpec], *, now: datetime
) -> list[TransferRecord]:
    """Post several transfers atomically: all of them, or (on any error) none."""
    if len(specs) == 1 and _group_committed(session):
        return [await _stage_batched(session, specs[0], is_hold=False, now=now)]
    try:
        rows = [await _stage(session, spec, is_hold=False, now=now) for spec in specs]
    except BaseException:
        await _rollback(session)
        raise
    await _commit(session)
    return rows


async def transfer(session: AsyncSession, spec: TransferSpec, *, now: datetime) -> TransferRecord:
    """Move money now (posted); the same id again returns the first transfer."""
    return (await post_linked(session, [spec], now=now))[0]


async def hold(session: AsyncSession, spec: TransferSpec, *, now: datetime) -> TransferRecord:
    """Reserve money (pending): it leaves the source's available balance until captured/voided."""
    if spec.expires_at is not None and spec.expires_at <= now:
        raise InvalidAmount("a hold must expire in the future")
    if _group_committed(session):
        return await _stage_batched(session, spec, is_hold=True, now=now)
    try:
        row = await _stage(session, spec, is_hold=True, now=now)
    except BaseException:
        await _rollback(session)
        raise
    await _commit(session)
    return row


def _resolution_id(hold_id: str, status: TransferStatus) -> str:
    return f"{hold_id}/{status.value}"


_RESOLUTION_KIND = {"posted": "capture", "voided": "void", "expired": "expiry"}


async def _resolve_portable(
    session: AsyncSession,
    *,
    hold_id: str,
    status: TransferStatus,
    amount_minor: int | None,
    now: datetime,
) -> TransferRecord | None:
    conditions = [TRANSFERS.c.id == hold_id, TRANSFERS.c.is_hold, TRANSFERS.c.status == "pending"]
    if status is TransferStatus.POSTED:
        conditions.append(or_(TRANSFERS.c.expires_at.is_(None), TRANSFERS.c.expires_at > now))
    elif status is TransferStatus.EXPIRED:
        conditions.append(TRANSFERS.c.expires_at <= now)
    claimed = (
        await session.exec(
            update(TRANSFERS)
            .where(and_(*conditions))
            .values(status=status.value)
            .returning(
                TRANSFERS.c.debit_account_id,
                TRANSFERS.c.credit_account_id,
                TRANSFERS.c.amount_minor,
                TRANSFERS.c.currency,
                TRANSFERS.c.ref,
            )
        )
    ).first()
    if claimed is None:
        return None
    debit_id, credit_id, held, currency, ref = claimed
    amount = held if amount_minor is None else amount_minor
    if not 0 < amount <= held:
        raise InvalidAmount(f"capture between 1 and the held {held} minor units")
    posted = amount if status is TransferStatus.POSTED else 0
    for account_id in sorted((debit_id, credit_id)):
        if account_id == debit_id:
            await _move(session, account_id, debits_pending=-held, debits_posted=posted)
        else:
            await _move(session, account_id, credits_pending=-held, credits_posted=posted)
    values: dict[str, Any] = {
        "id": _resolution_id(hold_id, status),
        "debit_account_id": debit_id,
        "credit_account_id": credit_id,
        "amount_minor": amount,
        "currency": currency,
        "kind": _RESOLUTION_KIND[status.value],
        "ref": ref,
        "status": status.value,
        "is_hold": False,
        "parent_id": hold_id,
        "created_at": now,
    }
    written = (
        await session.exec(TRANSFERS.insert().values(**values).returning(TRANSFERS.c.row_id))
    ).one()
    return TransferRecord(row_id=written[0], **values)


async def _resolve(
    session: AsyncSession,
    *,
    hold_id: str,
    status: TransferStatus,
    amount_minor: int | None,
    now: datetime,
) -> TransferRecord:
    """Move a pending hold to posted/voided/expired exactly once, writing the entry that says so."""
    if _group_committed(session):
        call = {
            "hold_id": hold_id,
            "status": status.value,
            "amount_minor": amount_minor,
            "now": now,
        }
        outcome, row = await batcher_for(session.bind, RESOLVE).submit(call)  # type: ignore[arg-type]
        if outcome == "CP422":
            raise InvalidAmount(f"capture between 1 and the held {row['amount_minor']} minor units")
        if outcome == "unclaimed":
            return await _explain_unclaimed(session, hold_id, status, amount_minor, now)
        return _record(row)
    try:
        if _on_postgres(session):
            resolved = await _call_postgres(
                session, _PG_RESOLVE, (hold_id, status.value, amount_minor, now)
            )
        else:
            resolved = await _resolve_portable(
                session, hold_id=hold_id, status=status, amount_minor=amount_minor, now=now
            )
    except BaseException:
        await _rollback(session)
        raise
    if resolved is None:
        await _rollback(session)
        return await _explain_unclaimed(session, hold_id, status, amount_minor, now)
    await _commit(session)
    return resolved


async def _explain_unclaimed(
    session: AsyncSession,
    hold_id: str,
    status: TransferStatus,
    amount_minor: int | None,
    now: datetime,
) -> TransferRecord:
    """The hold was not pending (or not due): replay a same resolution, else say why not."""
    held = await get_transfer(session, hold_id)
    if held is None or not held.is_hold:
        raise TransferNotFound(f"no hold {hold_id!r}")
    if held.status == status.value:
        done = await get_transfer(session, _resolution_id(hold_id, status))
        if done is not None and amount_minor in (None, done.amount_minor):
            return done
    if held.status == TransferStatus.PENDING and status is TransferStatus.POSTED:
        raise HoldExpired(f"hold {hold_id!r} expired at {held.expires_at}")
    if held.status == TransferStatus.PENDING:
        raise HoldNotPending(f"hold {hold_id!r} is not due to expire before {now}")
    raise HoldNotPending(f"hold {hold_id!r} is already {held.status}")


async def capture(
    session: AsyncSession, *, hold_id: str, amount_minor: int | None = None, now: datetime
) -> TransferRecord:
    """Post a pending hold in full or in part; the rest goes back to the source."""
    return await _resolve(
        session, hold_id=hold_id, status=TransferStatus.POSTED, amount_minor=amount_minor, now=now
    )


async def void(session: AsyncSession, *, hold_id: str, now: datetime) -> TransferRecord:
    """Release a pending hold in full."""
    return await _resolve(
        session, hold_id=hold_id, status=TransferStatus.VOIDED, amount_minor=None, now=now
    )


async def expire_due_holds(
    session: AsyncSession, *, now: datetime, limit: int = EXPIRY_BATCH
) -> int:
    """Void (status `expired`) every pending hold past its expiry; returns how many."""
    due = (
        await session.exec(
            select(TRANSFERS.c.id)
            .where(TRANSFERS.c.status == "pending", TRANSFERS.c.expires_at <= now)
            .order_by(TRANSFERS.c.expires_at)
            .limit(limit)
        )
    ).all()
    await session.rollback()
    expired = 0
    for hold_id in due:
        try:
            await _resolve(
                session, hold_id=hold_id, status=TransferStatus.EXPIRED, amount_minor=None, now=now
            )
            expired += 1
        except HoldNotPending:  # captured or voided meanwhile: nothing to expire
            continue
    return expired


async def refund(
    session: AsyncSession,
    *,
    transfer_id: str,
    refund_id: str,
    amount_minor: int,
    now: datetime,
) -> TransferRecord:
    """Send (part of) a posted transfer back; refunds never add up to more than it moved."""
    original = await get_transfer(session, transfer_id)
    if original is None or original.is_hold or original.status != TransferStatus.POSTED:
        await _rollback(session)
        raise TransferNotFound(f"no posted transfer {transfer_id!r} to refund")
    if not 0 < amount_minor <= original.amount_minor:
        await _rollback(session)
        raise InvalidAmount(f"refund between 1 and {original.amount_minor} minor units")
    # The reverse movement, between the same accounts, as an ordinary posted entry.
    debit_id, credit_id = original.credit_account_id, original.debit_account_id
    try:
        written = await _insert_transfer(
            session,
            id=refund_id,
            debit_account_id=debit_id,
            credit_account_id=credit_id,
            amount_minor=amount_minor,
            currency=original.currency,
            kind="refund",
            ref=original.ref,
            status=TransferStatus.POSTED.value,
            is_hold=False,
            parent_id=transfer_id,
            created_at=now,
        )
        if written is None:
            existing = await get_transfer(session, refund_id)
            await _rollback(session)
            if existing is None or (existing.parent_id, existing.amount_minor) != (
                transfer_id,
                amount_minor,
            ):
                raise TransferIdConflict(f"transfer id {refund_id!r} was used for another transfer")
            return existing
        counted: Any = await session.exec(
            update(TRANSFERS)
            .where(
                TRANSFERS.c.id == transfer_id,
                TRANSFERS.c.refunded_minor + amount_minor <= TRANSFERS.c.amount_minor,
            )
            .values(refunded_minor=TRANSFERS.c.refunded_minor + amount_minor)
        )
        if counted.rowcount != 1:
            raise RefundExceedsCaptured(
                f"refunds of {transfer_id!r} would exceed the {original.amount_minor} it moved"
            )
        for account_id in sorted((debit_id, credit_id)):
            if account_id == debit_id:
                if not await _move(
                    session, account_id, debits_posted=amount_minor, require_available=amount_minor
                ):
                    raise InsufficientFunds("the payee no longer holds enough to refund")
            else:
                await _move(session, account_id, credits_posted=amount_minor)
    except BaseException:
        await _rollback(session)
        raise
    await _commit(session)
    refunded = await get_transfer(session, refund_id)
    assert refunded is not None
    return refunded


# --- reading ---------------------------------------------------------------------------------


class WalletBalance(msgspec.Struct):
    currency: str
    available_minor: int
    held_minor: int
    balance_minor: int


async def wallet_balance(session: AsyncSession, user_id: UUID, currency: str) -> WalletBalance:
    """A user's wallet in one currency (all zero before it has ever moved money)."""
    if not is_supported_currency(currency):
        raise UnknownCurrency(f"unsupported currency {currency!r}")
    row = (
        await session.exec(
            select(Account)
            .where(col(Account.key) == wallet(user_id, currency).key)
            .execution_options(**_FRESH)
        )
    ).first()
    if row is None:
        return WalletBalance(currency, 0, 0, 0)
    balance = row.credits_posted - row.debits_posted
    return WalletBalance(currency, balance - row.debits_pending, row.debits_pending, balance)


class StatementLine(msgspec.Struct):
    transfer: TransferRecord
    direction: Literal["credit", "debit"]  # into the wallet, or out of it


async def statement(
    session: AsyncSession, *, user_id: UUID, limit: int, before_row_id: int | None = None
) -> list[StatementLine]:
    """The transfers of a user's wallets, newest first, keyset-paged by row id."""
    wallet_ids = select(ACCOUNTS.c.id).where(
        ACCOUNTS.c.owner_id == user_id, ACCOUNTS.c.kind == AccountKind.WALLET.value
    )
    query = (
        select(*TRANSFERS.c)
        .where(
            or_(
                TRANSFERS.c.debit_account_id.in_(wallet_ids),
                TRANSFERS.c.credit_account_id.in_(wallet_ids),
            )
        )
        .order_by(TRANSFERS.c.row_id.desc())
        .limit(limit)
    )
    if before_row_id is not None:
        query = query.where(TRANSFERS.c.row_id < before_row_id)
    rows = [_record(row._mapping) for row in (await session.exec(query)).all()]
    owned = set((await session.exec(wallet_ids)).all())
    return [
        StatementLine(row, "credit" if row.credit_account_id in owned else "debit") for row in rows
    ]


# --- the chain -------------------------------------------------------------------------------


def _entry(row: Any, seq: int) -> ChainEntry:
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


_ENTRY_COLUMNS = [
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
_VERIFY_COLUMNS = [*_ENTRY_COLUMNS, TRANSFERS.c.seq, TRANSFERS.c.hash]


_PG_CHAIN_UPDATE = (
    "UPDATE ledger_transfers t SET seq = u.seq, hash = u.hash "
    "FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(row_id, seq, hash) "
    "WHERE t.row_id = u.row_id"
)


async def chain_pending(session: AsyncSession, *, limit: int = CHAIN_BATCH) -> int:
    """Append committed, unchained entries to the chain; one writer at a time, others skip.

    Money movement never waits for the chain: transfers commit unchained and this sequencer
    (run in the background by every app process and the worker) chains them in batches, holding
    the head row's lock only for the batch, so concurrent writers cannot fork it.
    """
    head = (
        await session.exec(
            select(ChainHead)
            .where(col(ChainHead.id) == 1)
            .with_for_update(skip_locked=True)
            .execution_options(**_FRESH)
        )
    ).first()
    if head is None:  # another writer holds the head: it will chain what is committed
        await session.rollback()
        return 0
    rows = (
        await session.exec(
            select(*_ENTRY_COLUMNS)
            .where(TRANSFERS.c.seq.is_(None), not_(TRANSFERS.c.is_hold))
            .order_by(TRANSFERS.c.row_id)
            .limit(limit)
        )
    ).all()
    if not rows:
        await session.rollback()
        return 0
    seq, previous = head.seq, head.hash
    row_ids, seqs, hashes = [], [], []
    for row in rows:
        seq += 1
        previous = entry_hash(previous, _entry(row, seq))
        row_ids.append(row.row_id)
        seqs.append(seq)
        hashes.append(previous)
    if _on_postgres(session):  # one statement for the whole batch
        connection = await session.connection()
        await connection.exec_driver_sql(_PG_CHAIN_UPDATE, (row_ids, seqs, hashes))
    else:
        await session.exec(
            update(TRANSFERS)
            .where(TRANSFERS.c.row_id == bindparam("b_row_id"))
            .values(seq=bindparam("b_seq"), hash=bindparam("b_hash")),
            params=[
                {"b_row_id": r, "b_seq": q, "b_hash": h}
                for r, q, h in zip(row_ids, seqs, hashes, strict=True)
            ],
            execution_options={"synchronize_session": False},
        )
    head.seq, head.hash = seq, previous
    session.add(head)
    await session.commit()
    return len(rows)


async def chain_all(session: AsyncSession) -> int:
    """Chain until nothing committed is left unchained (or another writer is busy)."""
    total = 0
    while chained := await chain_pending(session):
        total += chained
    return total


async def chain_head(session: AsyncSession) -> tuple[int, str]:
    head = await session.get(ChainHead, 1, populate_existing=True)
    return (head.seq, head.hash) if head else (0, GENESIS_HASH)


class VerifyReport(msgspec.Struct):
    ok: bool
    entries: int
    unchained: int
    head_seq: int
    head_hash: str
    problem: str | None = None


async def verify_ledger(session: AsyncSession, *, page: int = 5_000) -> VerifyReport:
    """Recompute every hash and every balance from the transfers; report the first bad entry."""
    head_seq, head_hash = await chain_head(session)
    previous, next_seq, entries = GENESIS_HASH, 1, 0
    while True:
        rows = (
            await session.exec(
                select(*_VERIFY_COLUMNS)
                .where(TRANSFERS.c.seq >= next_seq)
                .order_by(TRANSFERS.c.seq)
                .limit(page)
            )
        ).all()
        if not rows:
            break
        broken = first_broken_link(
            [(_entry(r, r.seq), r.hash) for r in rows], previous, first_seq=next_seq
        )
        if broken is not None:
            return VerifyReport(
                False, entries, 0, head_seq, head_hash, f"entry {broken[0]}: {broken[1]}"
            )
        previous, next_seq, entries = rows[-1].hash, rows[-1].seq + 1, entries + len(rows)
    unchained = (
        await session.exec(
            select(func.count())
            .select_from(TRANSFERS)
            .where(TRANSFERS.c.seq.is_(None), not_(TRANSFERS.c.is_hold))
        )
    ).one()
    report = VerifyReport(True, entries, unchained, head_seq, head_hash)
    if (entries, previous) != (head_seq, head_hash):
        report.ok, report.problem = False, f"head says seq {head_seq}, the chain ends at {entries}"
    elif (mismatch := await _first_balance_mismatch(session)) is not None:
        report.ok, report.problem = False, mismatch
    return report


async def replayed_balances(session: AsyncSession) -> dict[int, tuple[int, int, int, int]]:
    """Every account's (debits_pending, debits_posted, credits_pending, credits_posted),
    rebuilt from the transfers alone."""
    balances: dict[int, list[int]] = {}
    posted = and_(not_(TRANSFERS.c.is_hold), TRANSFERS.c.status == "posted")
    pending = and_(TRANSFERS.c.is_hold, TRANSFERS.c.status == "pending")
    for slot, side, condition in (
        (0, TRANSFERS.c.debit_account_id, pending),
        (1, TRANSFERS.c.debit_account_id, posted),
        (2, TRANSFERS.c.credit_account_id, pending),
        (3, TRANSFERS.c.credit_account_id, posted),
    ):
        rows = await session.exec(
            select(side, func.sum(TRANSFERS.c.amount_minor)).where(condition).group_by(side)
        )
        for account_id, total in rows.all():
            balances.setdefault(account_id, [0, 0, 0, 0])[slot] = int(total)
    return {k: (v[0], v[1], v[2], v[3]) for k, v in balances.items()}


async def _first_balance_mismatch(session: AsyncSession) -> str | None:
    replayed = await replayed_balances(session)
    accounts = (
        await session.exec(select(Account).order_by(col(Account.id)).execution_options(**_FRESH))
    ).all()
    totals: dict[str, int] = {}
    for account in accounts:
        stored = (
            account.debits_pending,
            account.debits_posted,
            account.credits_pending,
            account.credits_posted,
        )
        if account.id is not None and stored != replayed.get(account.id, (0, 0, 0, 0)):
            return f"account {account.key}: stored {stored}, replayed {replayed.get(account.id)}"
        totals[account.currency] = (
            totals.get(account.currency, 0) + account.credits_posted - account.debits_posted
        )
    unbalanced = {c: t for c, t in totals.items() if t != 0}
    return f"posted balances do not sum to zero: {unbalanced}" if unbalanced else None


# --- funding ---------------------------------------------------------------------------------


async def top_up(
    session: AsyncSession,
    *,
    provider: FundingProvider,
    user_id: UUID,
    amount_minor: int,
    currency: str,
    transfer_id: str,
    now: datetime,
) -> TransferRecord:
    """Charge the provider, then credit the wallet; a retried id charges and credits once."""
    if not is_supported_currency(currency):
        raise UnknownCurrency(f"unsupported currency {currency!r}")
    existing = await get_transfer(session, transfer_id)
    if existing is None:
        result = await provider.top_up(
            reference=transfer_id, amount_minor=amount_minor, currency=currency
        )
        if not result.succeeded:
            raise PaymentDeclined(f"the {provider.name} provider declined: {result.reason}")
        ref = f"funding:{provider.name}:{result.provider_ref}"
    else:
        ref = existing.ref  # compared below like any retried transfer
    spec = TransferSpec(
        id=transfer_id,
        debit=external_funding(provider.name, currency),
        credit=wallet(user_id, currency),
        amount_minor=amount_minor,
        kind="top_up",
        ref=ref,
    )
    return await transfer(session, spec, now=now)


async def withdraw(
    session: AsyncSession,
    *,
    provider: FundingProvider,
    user_id: UUID,
    amount_minor: int,
    currency: str,
    transfer_id: str,
    now: datetime,
) -> TransferRecord:
    """Hold the money, ask the provider to pay it out, then capture (or void if declined)."""
    spec = TransferSpec(
        id=transfer_id,
        debit=wallet(user_id, currency),
        credit=external_funding(provider.name, currency),
        amount_minor=amount_minor,
        kind="withdrawal",
        ref=f"funding:{provider.name}:{transfer_id}",
    )
    held = await hold(session, spec, now=now)
    if held.status != TransferStatus.PENDING:  # a retry of a finished withdrawal
        return held
    result = await provider.withdraw(
        reference=transfer_id, amount_minor=amount_minor, currency=currency
    )
    if not result.succeeded:
        await void(session, hold_id=transfer_id, now=now)
        raise PaymentDeclined(f"the {provider.name} provider declined: {result.reason}")
    await capture(session, hold_id=transfer_id, now=now)
    refreshed = await get_transfer(session, transfer_id)
    assert refreshed is not None
    return refreshed

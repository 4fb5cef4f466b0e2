"""Ledger operations inside the caller's transaction: they never commit, roll back or open
sessions of their own (the use case's unit of work does).

A refused operation raises a PaymentError. On PostgreSQL that also aborts the transaction, so a
use case that goes on after a refusal wraps the operation in `async with uow.savepoint():`; on
SQLite a refused operation writes nothing. Account rows are locked in ascending id order: by
each PL/pgSQL call for its own two accounts, and by `lock_accounts` for all the accounts of a use
case that makes several calls (call it first, as `post_linked` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Table, select, update

from app.db import AsyncSession, DriverQuery, any_param, dialect_insert, on_postgres, one_of
from payments import portable, postgres, rules
from payments.errors import (
    HoldExpired,
    HoldNotPending,
    InsufficientFunds,
    InvalidTransfer,
    RefundExceedsCaptured,
    TransferIdConflict,
    TransferNotFound,
)
from payments.models import Account, AccountKind, Transfer, TransferKind, TransferStatus
from payments.records import (
    AccountRef,
    TransferRecord,
    TransferSpec,
    resolution_id,
    row_values,
    validate,
    validate_capture,
    validate_id,
)

ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
TRANSFERS: Table = Transfer.__table__  # type: ignore[attr-defined]

get_transfer = portable.get_transfer


async def open_accounts(
    session: AsyncSession, refs: Sequence[AccountRef], now: datetime
) -> dict[str, int]:
    """Ids of these accounts, opening the missing ones (concurrent openers are harmless).

    Read from the database every time: no id outlives the transaction that read it.
    """
    wanted = {ref.key: ref for ref in refs}
    found = dict(
        (
            await session.execute(
                select(ACCOUNTS.c.key, ACCOUNTS.c.id).where(ACCOUNTS.c.key.in_(list(wanted)))
            )
        ).all()
    )
    missing = [ref for key, ref in wanted.items() if key not in found]
    if missing:
        await session.execute(
            dialect_insert(session, ACCOUNTS)
            .values(
                [
                    {
                        "key": ref.key,
                        "kind": ref.kind.value,
                        "currency": ref.currency,
                        "owner_id": ref.owner_id,
                        "debits_must_not_exceed_credits": ref.limited,
                        "created_at": now,
                    }
                    for ref in missing
                ]
            )
            .on_conflict_do_nothing(index_elements=["key"])
        )
        opened = await session.execute(
            select(ACCOUNTS.c.key, ACCOUNTS.c.id).where(
                ACCOUNTS.c.key.in_([ref.key for ref in missing])
            )
        )
        found.update(opened.all())
    return found


async def lock_accounts(session: AsyncSession, account_ids: Sequence[int]) -> None:
    """Lock these accounts in ascending id order (PostgreSQL; SQLite has one writer anyway)."""
    if on_postgres(session) and account_ids:
        await postgres.lock_accounts(session, list(account_ids))


def _balances_query() -> Any:
    available = ACCOUNTS.c.credits_posted - ACCOUNTS.c.debits_posted - ACCOUNTS.c.debits_pending
    return select(ACCOUNTS.c.key, ACCOUNTS.c.id, available).order_by(ACCOUNTS.c.id)


def _by_key_and_id(rows: Sequence[Any]) -> tuple[dict[str, int], dict[int, int]]:
    return {row[0]: int(row[1]) for row in rows}, {int(row[1]): int(row[2]) for row in rows}


async def open_and_lock(
    session: AsyncSession, refs: Sequence[AccountRef], now: datetime
) -> tuple[dict[str, int], dict[int, int]]:
    """Open these accounts if need be and lock them in ascending id order: (ids by key, what
    each can still pay out by id), in one statement when they are all open already."""
    wanted = list({ref.key: ref for ref in refs}.values())
    query = _balances_query()
    if on_postgres(session):
        query = query.with_for_update(key_share=True)

    async def lock(keys: list[str]) -> list[Any]:
        found = query.where(one_of(session, ACCOUNTS.c.key, keys))
        return list((await session.execute(found)).all())

    rows = await lock([ref.key for ref in wanted])
    found = {row[0] for row in rows}
    missing = [ref for ref in wanted if ref.key not in found]
    if missing:  # opened now, so numbered after every account already locked: still in order
        await open_accounts(session, missing, now)
        rows += await lock([ref.key for ref in missing])
    return _by_key_and_id(rows)


#: `balances` on PostgreSQL, run by the driver (a batch of joins reads it every time).
_PG_BALANCES = DriverQuery(_balances_query().where(any_param(ACCOUNTS.c.key, "keys")))


async def balances(
    session: AsyncSession, refs: Sequence[AccountRef]
) -> tuple[dict[str, int], dict[int, int]]:
    """As `open_and_lock`, without opening or locking anything: the open accounts among these."""
    keys = [ref.key for ref in refs]
    if on_postgres(session):
        return _by_key_and_id(await _PG_BALANCES.fetch(session, keys=keys))
    query = _balances_query().where(ACCOUNTS.c.key.in_(keys))
    return _by_key_and_id(list((await session.execute(query)).all()))


async def wallet_currencies(
    session: AsyncSession, user_ids: Sequence[UUID]
) -> dict[UUID, set[str]]:
    """The currencies in which each of these users has a wallet (users with none are left out)."""
    query = select(ACCOUNTS.c.owner_id, ACCOUNTS.c.currency).where(
        ACCOUNTS.c.kind == AccountKind.WALLET.value,
        one_of(session, ACCOUNTS.c.owner_id, list(user_ids)),
    )
    currencies: dict[UUID, set[str]] = {}
    for owner_id, currency in (await session.execute(query)).all():
        currencies.setdefault(owner_id, set()).add(currency)
    return currencies


async def _stage_opened(
    session: AsyncSession,
    spec: TransferSpec,
    ids: dict[str, int],
    *,
    is_hold: bool,
    now: datetime,
) -> TransferRecord:
    """Write a validated spec whose accounts are open (`ids` by key, read in this transaction)."""
    values = row_values(spec, is_hold=is_hold, now=now)
    if on_postgres(session):  # the function resolves the keys itself
        staged = await postgres.call(session, postgres.STAGE, postgres.stage_params(values, now))
        assert staged is not None, "the accounts were opened in this transaction"
        return staged
    values["debit_account_id"] = ids[spec.debit.key]
    values["credit_account_id"] = ids[spec.credit.key]
    return await portable.stage(session, values)


async def _stage(
    session: AsyncSession, spec: TransferSpec, *, is_hold: bool, now: datetime
) -> TransferRecord:
    validate(spec, is_hold=is_hold, now=now)
    ids = await open_accounts(session, [spec.debit, spec.credit], now)
    return await _stage_opened(session, spec, ids, is_hold=is_hold, now=now)


async def post_linked(
    session: AsyncSession, specs: Sequence[TransferSpec], *, now: datetime
) -> list[TransferRecord]:
    """Post several transfers in the caller's transaction: all of them or, on error, none (a
    savepoint undoes the ones already staged, on both backends)."""
    for spec in specs:
        validate(spec, is_hold=False, now=now)
    async with session.begin_nested():
        refs = [ref for spec in specs for ref in (spec.debit, spec.credit)]
        ids = await open_accounts(session, refs, now)
        await lock_accounts(session, list(ids.values()))
        return [await _stage_opened(session, spec, ids, is_hold=False, now=now) for spec in specs]


async def transfer(session: AsyncSession, spec: TransferSpec, *, now: datetime) -> TransferRecord:
    """Move money now (posted); the same id again returns the first transfer."""
    return await _stage(session, spec, is_hold=False, now=now)


async def hold(session: AsyncSession, spec: TransferSpec, *, now: datetime) -> TransferRecord:
    """Reserve money (pending): it leaves the source's available balance until resolved."""
    return await _stage(session, spec, is_hold=True, now=now)


async def replace_holds(
    session: AsyncSession,
    void_ids: Sequence[str],
    specs: Sequence[TransferSpec],
    *,
    now: datetime,
    locked: dict[str, int] | None = None,
) -> None:
    """Release pending holds in full and stage new holds, all at once (on PostgreSQL one
    set-based statement, each account updated once with its net sum): all of it, or raise
    (HoldNotPending, TransferIdConflict even for a replayed id, InsufficientFunds), after which
    the caller rolls back, as after any refused operation. A source must afford its new holds
    less the holds released. `locked`: every account involved, by key, as `open_and_lock` locked
    them in this transaction (then neither opened nor locked again: fewer round trips)."""
    for spec in specs:
        validate(spec, is_hold=True, now=now)
    if not on_postgres(session):
        for hold_id in void_ids:
            await void(session, hold_id=hold_id, now=now)
        for spec in specs:
            await _stage(session, spec, is_hold=True, now=now)
        return
    if not void_ids and not specs:
        return
    refs = [ref for spec in specs for ref in (spec.debit, spec.credit)]
    if locked is not None and all(ref.key in locked for ref in refs):
        ids, lock = locked, False
    else:
        ids, lock = await open_accounts(session, refs, now), True
    rows = [row_values(spec, is_hold=True, now=now) for spec in specs]
    await postgres.replace_set(session, list(void_ids), rows, ids, now, lock=lock)


def replace_holds_args(
    void_ids: Sequence[str],
    specs: Sequence[TransferSpec],
    *,
    ids: dict[str, int],
    now: datetime,
) -> tuple[Any, ...]:
    """`replace_holds` as the arguments of the database's `ledger_replace_set` (PostgreSQL), for
    a database function of a use case that runs it under the locks it takes itself (every
    account open: `ids` by key); the specs are validated here. The caller checks the counts it
    answers, as `replace_holds` does."""
    for spec in specs:
        validate(spec, is_hold=True, now=now)
    rows = [row_values(spec, is_hold=True, now=now) for spec in specs]
    return postgres.replace_set_params(list(void_ids), rows, ids, now)


async def hold_amounts(session: AsyncSession, hold_ids: Sequence[str]) -> dict[str, int]:
    """The amount of each of these holds (minor units) by id; ids of no hold are left out."""
    if not hold_ids:
        return {}
    query = select(TRANSFERS.c.id, TRANSFERS.c.amount_minor).where(
        one_of(session, TRANSFERS.c.id, list(hold_ids)), TRANSFERS.c.is_hold
    )
    return {row.id: row.amount_minor for row in (await session.execute(query)).all()}


async def hold_all(
    session: AsyncSession,
    specs: Sequence[TransferSpec],
    *,
    now: datetime,
    locked: dict[str, int] | None = None,
) -> None:
    """Several holds at once: `replace_holds` releasing none."""
    await replace_holds(session, (), specs, now=now, locked=locked)


async def void_all(
    session: AsyncSession, hold_ids: Sequence[str], *, now: datetime, locked: bool = False
) -> None:
    """Release several pending holds in full: `replace_holds` staging none (`locked`: the
    caller already locked every account of these holds in this transaction)."""
    await replace_holds(session, hold_ids, (), now=now, locked={} if locked else None)


async def _resolve(
    session: AsyncSession,
    *,
    hold_id: str,
    status: TransferStatus,
    amount_minor: int | None,
    now: datetime,
) -> TransferRecord:
    validate_capture(amount_minor)
    if on_postgres(session):
        resolved = await postgres.call(
            session, postgres.RESOLVE, (hold_id, status.value, amount_minor, now)
        )
    else:
        resolved = await portable.resolve(
            session, hold_id=hold_id, status=status, amount_minor=amount_minor, now=now
        )
    if resolved is None:
        return await explain_unclaimed(session, hold_id, status, amount_minor, now)
    return resolved


async def explain_unclaimed(
    session: AsyncSession,
    hold_id: str,
    status: TransferStatus,
    amount_minor: int | None,
    now: datetime,
) -> TransferRecord:
    """The hold was not pending (or not due): replay the same resolution, else say why not.

    A retried capture of the same amount (or a retried void) is a replay and answers the first
    resolution; any other second resolution of a hold is refused (409).
    """
    held = await get_transfer(session, hold_id)
    if held is None or not held.is_hold:
        raise TransferNotFound(f"no hold {hold_id!r}")
    if held.status == status:
        done = await get_transfer(session, resolution_id(hold_id, status))
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


async def release(session: AsyncSession, *, hold_id: str, now: datetime) -> None:
    """Void a hold unless it is already released (voided, or expired by the sweep, perhaps at
    this moment): the money is back in its source either way. Captured holds still raise."""
    held = await get_transfer(session, hold_id)
    if held is not None and held.status in (TransferStatus.VOIDED, TransferStatus.EXPIRED):
        return
    try:
        async with session.begin_nested():
            await void(session, hold_id=hold_id, now=now)
    except HoldNotPending:
        held = await get_transfer(session, hold_id)
        if held is None or held.status not in (TransferStatus.VOIDED, TransferStatus.EXPIRED):
            raise


async def expire(session: AsyncSession, *, hold_id: str, now: datetime) -> TransferRecord:
    """Release a pending hold whose expiry has passed (status `expired`)."""
    return await _resolve(
        session, hold_id=hold_id, status=TransferStatus.EXPIRED, amount_minor=None, now=now
    )


async def due_holds(
    session: AsyncSession, *, now: datetime, limit: int, except_kinds: Sequence[str] = ()
) -> list[str]:
    """Ids of pending holds past their expiry, oldest first."""
    rows = await session.execute(
        select(TRANSFERS.c.id)
        .where(
            TRANSFERS.c.status == TransferStatus.PENDING.value,
            TRANSFERS.c.expires_at <= now,
            TRANSFERS.c.kind.not_in(list(except_kinds)),
        )
        .order_by(TRANSFERS.c.expires_at)
        .limit(limit)
    )
    return list(rows.scalars().all())


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
        raise TransferNotFound(f"no posted transfer {transfer_id!r} to refund")
    if not 0 < amount_minor <= original.amount_minor:
        raise InvalidTransfer(f"refund between 1 and {original.amount_minor} minor units")
    validate_id(refund_id)
    values: dict[str, Any] = {
        "id": refund_id,
        # The reverse movement, between the same accounts, as an ordinary posted entry.
        "debit_account_id": original.credit_account_id,
        "credit_account_id": original.debit_account_id,
        "amount_minor": amount_minor,
        "currency": original.currency,
        "kind": TransferKind.REFUND.value,
        "ref": original.ref,
        "status": TransferStatus.POSTED.value,
        "is_hold": False,
        "parent_id": transfer_id,
        "created_at": now,
    }
    existing = await get_transfer(session, refund_id)
    if existing is not None:
        if (existing.parent_id, existing.amount_minor) != (transfer_id, amount_minor):
            raise TransferIdConflict(f"transfer id {refund_id!r} was used for another transfer")
        return existing
    # Several statements that must stand or fall together, whatever the caller does next.
    async with session.begin_nested():
        await lock_accounts(session, [original.debit_account_id, original.credit_account_id])
        counted: Any = await session.execute(
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
        debit, credit = rules.staged(amount_minor, is_hold=False)
        if not await portable.apply(
            session, values["debit_account_id"], debit, limit_minor=amount_minor
        ):
            raise InsufficientFunds("the payee no longer holds enough to refund")
        await portable.apply(session, values["credit_account_id"], credit)
        return await portable.insert(session, values)

"""Standalone payments use cases: each one unit of work (or one group-committed statement).

Use cases of other domains call payments/ledger.py inside their own unit of work instead. The
use cases here that are a single ledger step choose group commit on PostgreSQL explicitly:
concurrent single steps of a process then share one statement and one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import msgspec
import structlog
from sqlalchemy import Table, or_, select

from app.db import AsyncSession, driver_fetchrow, on_postgres
from app.uow import UnitOfWork, use_case
from payments import ledger, postgres
from payments.batcher import batcher_for
from payments.errors import (
    FundingUnconfirmed,
    HoldExpired,
    HoldNotPending,
    InsufficientFunds,
    InvalidTransfer,
    PaymentDeclined,
    TransferIdConflict,
    UnknownCurrency,
)
from payments.funding import FundingProvider, FundingResult, FundingStatus
from payments.models import Account, AccountKind, Transfer, TransferKind, TransferStatus
from payments.money import is_supported_currency
from payments.postgres import Outcome
from payments.records import (
    TransferRecord,
    TransferSpec,
    external_funding,
    record,
    row_values,
    validate,
    validate_capture,
    wallet,
)

log = structlog.get_logger("copool.payments")

ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
TRANSFERS: Table = Transfer.__table__  # type: ignore[attr-defined]
EXPIRY_BATCH = 500
SETTLE_BATCH = 100
#: How old a pending withdrawal must be before the job asks the provider about it: longer than
#: any request (lease, timeouts) that may still be on its way to the provider.
SETTLE_GRACE = timedelta(minutes=10)


# --- single ledger steps as use cases -----------------------------------------------------------


async def _stage_alone(
    uow: UnitOfWork, spec: TransferSpec, *, is_hold: bool, now: datetime
) -> TransferRecord:
    """One transfer or hold through the process's group commit (PostgreSQL)."""
    validate(spec, is_hold=is_hold, now=now)
    values = row_values(spec, is_hold=is_hold, now=now)
    batcher = batcher_for(uow.engine, postgres.STAGE_BATCH)
    outcome, row = await batcher.submit(values)
    if outcome == Outcome.ACCOUNT_NOT_OPEN:  # first money through an account: open, then stage
        async with uow:
            await ledger.open_accounts(uow.session, [spec.debit, spec.credit], now)
            await uow.commit()
        outcome, row = await batcher.submit(values)
    if outcome == Outcome.INSUFFICIENT_FUNDS:
        raise InsufficientFunds(
            f"the source account has less than {spec.amount_minor} {spec.debit.currency} "
            "minor units available"
        )
    if outcome == Outcome.ID_CONFLICT:
        raise TransferIdConflict(f"transfer id {spec.id!r} was used for another transfer")
    assert outcome == Outcome.OK, outcome
    return record(row)


async def _stage_as_use_case(
    uow: UnitOfWork, spec: TransferSpec, *, is_hold: bool, now: datetime
) -> TransferRecord:
    if uow.on_postgres:
        return await _stage_alone(uow, spec, is_hold=is_hold, now=now)
    async with uow:
        staged = await (ledger.hold if is_hold else ledger.transfer)(uow.session, spec, now=now)
        await uow.commit()
    return staged


@use_case
async def transfer(uow: UnitOfWork, spec: TransferSpec, *, now: datetime) -> TransferRecord:
    """Move money now, as a use case of its own; the same id again returns the first transfer."""
    return await _stage_as_use_case(uow, spec, is_hold=False, now=now)


@use_case
async def hold(uow: UnitOfWork, spec: TransferSpec, *, now: datetime) -> TransferRecord:
    """Reserve money, as a use case of its own."""
    return await _stage_as_use_case(uow, spec, is_hold=True, now=now)


@use_case
async def post_linked(
    uow: UnitOfWork, specs: Sequence[TransferSpec], *, now: datetime
) -> list[TransferRecord]:
    """Post several transfers atomically: all of them, or (on any error) none."""
    async with uow:
        posted = await ledger.post_linked(uow.session, specs, now=now)
        await uow.commit()
    return posted


async def _resolve_alone(
    uow: UnitOfWork,
    *,
    hold_id: str,
    status: TransferStatus,
    amount_minor: int | None,
    now: datetime,
) -> TransferRecord:
    validate_capture(amount_minor)
    if uow.on_postgres:
        call = {
            "hold_id": hold_id,
            "status": status.value,
            "amount_minor": amount_minor,
            "now": now,
        }
        outcome, row = await batcher_for(uow.engine, postgres.RESOLVE_BATCH).submit(call)
        if outcome == Outcome.INVALID_AMOUNT:
            raise InvalidTransfer(
                f"capture between 1 and the held {row['amount_minor']} minor units"
            )
        if outcome == Outcome.OK:
            return record(row)
        async with uow:
            return await ledger.explain_unclaimed(uow.session, hold_id, status, amount_minor, now)
    async with uow:
        if status is TransferStatus.POSTED:
            resolved = await ledger.capture(
                uow.session, hold_id=hold_id, amount_minor=amount_minor, now=now
            )
        elif status is TransferStatus.VOIDED:
            resolved = await ledger.void(uow.session, hold_id=hold_id, now=now)
        else:
            resolved = await ledger.expire(uow.session, hold_id=hold_id, now=now)
        await uow.commit()
    return resolved


@use_case
async def capture(
    uow: UnitOfWork, *, hold_id: str, amount_minor: int | None = None, now: datetime
) -> TransferRecord:
    """Post a pending hold in full or in part; a retried capture of the same amount replays."""
    return await _resolve_alone(
        uow, hold_id=hold_id, status=TransferStatus.POSTED, amount_minor=amount_minor, now=now
    )


@use_case
async def void(uow: UnitOfWork, *, hold_id: str, now: datetime) -> TransferRecord:
    """Release a pending hold in full."""
    return await _resolve_alone(
        uow, hold_id=hold_id, status=TransferStatus.VOIDED, amount_minor=None, now=now
    )


@use_case
async def refund(
    uow: UnitOfWork, *, transfer_id: str, refund_id: str, amount_minor: int, now: datetime
) -> TransferRecord:
    """Send (part of) a posted transfer back."""
    async with uow:
        refunded = await ledger.refund(
            uow.session,
            transfer_id=transfer_id,
            refund_id=refund_id,
            amount_minor=amount_minor,
            now=now,
        )
        await uow.commit()
    return refunded


async def expire_due_holds(uow: UnitOfWork, *, now: datetime, limit: int = EXPIRY_BATCH) -> int:
    """Release (status `expired`) pending holds past their expiry, except withdrawals, which
    only the provider's answer settles; each its own step. Returns how many."""
    async with uow:
        due = await ledger.due_holds(
            uow.session, now=now, limit=limit, except_kinds=[TransferKind.WITHDRAWAL.value]
        )
    expired = 0
    for hold_id in due:
        try:
            await _resolve_alone(
                uow, hold_id=hold_id, status=TransferStatus.EXPIRED, amount_minor=None, now=now
            )
        except (InvalidTransfer, TransferIdConflict) as exc:
            log.error("hold could not expire", hold_id=hold_id, error=str(exc))
            continue
        except HoldNotPending:  # captured, voided or not yet due: nothing to expire
            continue
        expired += 1
    return expired


# --- funding: money entering and leaving copool ------------------------------------------------

#: The longest copool waits for a provider's answer; no answer by then is "unknown" (the
#: request's Idempotency-Key lease, 60 s by default, outlasts it).
PROVIDER_TIMEOUT_S = 10.0


async def _ask(call: Awaitable[FundingResult]) -> FundingResult:
    """A provider call with a deadline: a provider that does not answer in time is UNKNOWN."""
    try:
        async with asyncio.timeout(PROVIDER_TIMEOUT_S):
            return await call
    except TimeoutError:
        return FundingResult(FundingStatus.UNKNOWN, "", reason="provider_timeout")


async def top_up(
    uow: UnitOfWork,
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
    async with uow:
        existing = await ledger.get_transfer(uow.session, transfer_id)
    if existing is None:
        # The provider charges once per reference, so a re-run after a crash is harmless.
        result = await _ask(
            provider.top_up(reference=transfer_id, amount_minor=amount_minor, currency=currency)
        )
        if result.status is FundingStatus.DECLINED:
            raise PaymentDeclined(f"the {provider.name} provider declined: {result.reason}")
        if result.status is FundingStatus.UNKNOWN:
            # Not a refusal: the retry asks the provider again with the same reference.
            raise FundingUnconfirmed(f"the {provider.name} provider has not confirmed the charge")
        ref = f"funding:{provider.name}:{result.provider_ref}"
    else:
        ref = existing.ref  # compared below like any retried transfer
    spec = TransferSpec(
        id=transfer_id,
        debit=external_funding(provider.name, currency),
        credit=wallet(user_id, currency),
        amount_minor=amount_minor,
        kind=TransferKind.TOP_UP.value,
        ref=ref,
    )
    return await transfer(uow, spec, now=now)


async def withdraw(
    uow: UnitOfWork,
    *,
    provider: FundingProvider,
    user_id: UUID,
    amount_minor: int,
    currency: str,
    transfer_id: str,
    hold_ttl: timedelta,
    now: datetime,
) -> TransferRecord:
    """Hold the money, ask the provider to pay it out, then capture (or void if declined).

    The hold commits before the provider is asked (no lock is held across the call) and expires
    after `hold_ttl`. If the provider's answer is unknown (a timeout), the hold stays pending and
    `settle_withdrawals` asks the provider again until it is decided.
    """
    spec = TransferSpec(
        id=transfer_id,
        debit=wallet(user_id, currency),
        credit=external_funding(provider.name, currency),
        amount_minor=amount_minor,
        kind=TransferKind.WITHDRAWAL.value,
        ref=f"funding:{provider.name}:{transfer_id}"[:160],
        expires_at=now + hold_ttl,
    )
    async with uow:
        existing = await ledger.get_transfer(uow.session, transfer_id)
    held = existing or await hold(uow, spec, now=now)
    if held.status != TransferStatus.PENDING:  # a retry of a finished withdrawal
        return held
    result = await _ask(
        provider.withdraw(reference=transfer_id, amount_minor=amount_minor, currency=currency)
    )
    return await _settle_withdrawal(uow, held, result, provider=provider, now=now)


async def _settle_withdrawal(
    uow: UnitOfWork,
    held: TransferRecord,
    result: FundingResult,
    *,
    provider: FundingProvider,
    now: datetime,
) -> TransferRecord:
    if result.status is FundingStatus.UNKNOWN:
        log.warning("withdrawal outcome unknown; will ask again", transfer_id=held.id)
        return held
    if result.status is FundingStatus.DECLINED:
        await void(uow, hold_id=held.id, now=now)
        raise PaymentDeclined(f"the {provider.name} provider declined: {result.reason}")
    try:
        await capture(uow, hold_id=held.id, now=now)
    except (HoldExpired, HoldNotPending) as refused:
        async with uow:
            current = await ledger.get_transfer(uow.session, held.id)
        if current is not None and current.status is TransferStatus.POSTED:
            return current  # captured meanwhile (a concurrent settlement)
        log.warning("payout confirmed after its hold ended", transfer_id=held.id, why=str(refused))
        await _pay_out_late(uow, held, provider=provider, now=now)
    async with uow:
        settled = await ledger.get_transfer(uow.session, held.id)
    assert settled is not None
    return settled


@use_case
async def _pay_out_late(
    uow: UnitOfWork, held: TransferRecord, *, provider: FundingProvider, now: datetime
) -> None:
    """The provider paid out after the hold's expiry (which forbids a capture): release the
    hold and post the same money as a plain transfer, in one unit of work."""
    async with uow:
        user_id = (
            await uow.session.execute(
                select(ACCOUNTS.c.owner_id).where(ACCOUNTS.c.id == held.debit_account_id)
            )
        ).scalar_one()
        current = await ledger.get_transfer(uow.session, held.id)
        if current is not None and current.status is TransferStatus.PENDING:
            await ledger.void(uow.session, hold_id=held.id, now=now)
        await ledger.transfer(
            uow.session,
            TransferSpec(
                id=f"{held.id}:paid-late",
                debit=wallet(user_id, held.currency),
                credit=external_funding(provider.name, held.currency),
                amount_minor=held.amount_minor,
                kind=TransferKind.WITHDRAWAL.value,
                ref=held.ref,
            ),
            now=now,
        )
        await uow.commit()


class SweepPlace(msgspec.Struct):
    """Where a sweep that ran out of time stopped, for the next one to go on from (kept by the
    worker process; None: start at the oldest)."""

    after: tuple[datetime, int] | None = None


async def settle_withdrawals(
    uow: UnitOfWork,
    *,
    provider: FundingProvider,
    now: datetime,
    limit: int = SETTLE_BATCH,
    min_age: timedelta = SETTLE_GRACE,
    place: SweepPlace | None = None,
    budget_s: float | None = None,
) -> int:
    """Ask the provider about withdrawals still pending; capture or void what it decided.

    Only holds older than `min_age`: a younger one may still be in its request, whose provider
    call has not reached the provider (which would then answer "not found"). Every such
    withdrawal is asked once a sweep, `limit` at a time in the index's order (a page of ones the
    provider has not decided yet never hides the rest). A sweep given `budget_s` stops once it
    has asked for that long (a provider answering slowly) and leaves in `place` where the next
    one goes on, so the ones after never wait behind the same slow ones. Returns how many were
    decided.
    """
    place = place or SweepPlace()
    stop_at = None if budget_s is None else time.monotonic() + budget_s
    decided = 0
    while True:
        pending = await _pending_withdrawals(uow, provider, now - min_age, place.after, limit)
        for held in pending:
            result = await _ask(provider.status(reference=held.id))
            assert held.expires_at is not None  # the query asks for it
            place.after = (held.expires_at, held.row_id)
            if result.status is not FundingStatus.UNKNOWN:
                with contextlib.suppress(PaymentDeclined):  # voided: the money is back
                    await _settle_withdrawal(uow, held, result, provider=provider, now=now)
                decided += 1
            if stop_at is not None and time.monotonic() >= stop_at:
                return decided
        if len(pending) < limit:
            place.after = None  # all asked: the next sweep starts at the oldest again
            return decided


async def _pending_withdrawals(
    uow: UnitOfWork,
    provider: FundingProvider,
    created_by: datetime,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[TransferRecord]:
    query = select(*TRANSFERS.c).where(
        TRANSFERS.c.kind == TransferKind.WITHDRAWAL.value,
        TRANSFERS.c.status == TransferStatus.PENDING.value,
        # Every withdrawal has an expiry; saying so lets this use the index of pending holds
        # that expire (its predicate), not a scan of the whole ledger.
        TRANSFERS.c.expires_at.is_not(None),
        TRANSFERS.c.ref.startswith(f"funding:{provider.name}:"),
        TRANSFERS.c.created_at <= created_by,
    )
    if after is not None:
        expires_at, row_id = after
        query = query.where(  # spelled so that the index (on expires_at alone) bounds the scan
            TRANSFERS.c.expires_at >= expires_at,
            or_(TRANSFERS.c.expires_at > expires_at, TRANSFERS.c.row_id > row_id),
        )
    async with uow:
        # In the index's own order: ordered by row id, PostgreSQL could walk the whole ledger
        # by its primary key looking for the first few withdrawals.
        rows = await uow.session.execute(
            query.order_by(TRANSFERS.c.expires_at, TRANSFERS.c.row_id).limit(limit)
        )
        return [record(row._mapping) for row in rows.all()]


# --- reads ---------------------------------------------------------------------------------------


class WalletBalance(msgspec.Struct):
    currency: str
    available_minor: int
    held_minor: int
    balance_minor: int


_WALLET = select(ACCOUNTS.c.debits_pending, ACCOUNTS.c.debits_posted, ACCOUNTS.c.credits_posted)
_PG_WALLET = (
    "SELECT debits_pending, debits_posted, credits_posted FROM ledger_accounts WHERE key = $1"
)


async def wallet_balance(session: AsyncSession, user_id: UUID, currency: str) -> WalletBalance:
    """A user's wallet in one currency (all zero before it has ever moved money)."""
    if not is_supported_currency(currency):
        raise UnknownCurrency(f"unsupported currency {currency!r}")
    key = wallet(user_id, currency).key
    row: Any
    if on_postgres(session):
        # The read every screen makes: straight to the driver (asyncpg prepares it once per
        # connection), on a pooled connection borrowed for it alone: SQLAlchemy's statement,
        # Connection and transaction machinery were most of its cost.
        row = await driver_fetchrow(session, _PG_WALLET, key)
    else:
        row = (await session.execute(_WALLET.where(ACCOUNTS.c.key == key))).first()
    if row is None:
        return WalletBalance(currency, 0, 0, 0)
    pending, debited, credited = row
    balance = credited - debited
    return WalletBalance(currency, balance - pending, pending, balance)


class StatementLine(msgspec.Struct):
    transfer: TransferRecord
    direction: Literal["credit", "debit"]  # into the wallet, or out of it


async def statement(
    session: AsyncSession, *, user_id: UUID, limit: int, before_row_id: int | None = None
) -> list[StatementLine]:
    """The transfers of a user's wallets, newest first, keyset-paged by row id."""
    owned = set(
        (
            await session.execute(
                select(ACCOUNTS.c.id).where(
                    ACCOUNTS.c.owner_id == user_id,
                    ACCOUNTS.c.kind == AccountKind.WALLET.value,
                )
            )
        )
        .scalars()
        .all()
    )
    if not owned:
        return []
    query = (
        select(*TRANSFERS.c)
        .where(
            or_(
                TRANSFERS.c.debit_account_id.in_(owned),
                TRANSFERS.c.credit_account_id.in_(owned),
            )
        )
        .order_by(TRANSFERS.c.row_id.desc())
        .limit(limit)
    )
    if before_row_id is not None:
        query = query.where(TRANSFERS.c.row_id < before_row_id)
    rows = [record(row._mapping) for row in (await session.execute(query)).all()]
    return [
        StatementLine(row, "credit" if row.credit_account_id in owned else "debit") for row in rows
    ]

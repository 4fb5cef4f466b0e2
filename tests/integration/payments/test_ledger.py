"""Ledger semantics through the use cases (payments/service.py) and the in-transaction
primitives (payments/ledger.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import SessionMaker, create_read_sessionmaker, create_sessionmaker
from app.uow import UnitOfWork
from payments import ledger, service
from payments.chain_writer import chain_all
from payments.errors import (
    CurrencyMismatch,
    HoldExpired,
    HoldNotPending,
    InsufficientFunds,
    InvalidTransfer,
    RefundExceedsCaptured,
    TransferIdConflict,
)
from payments.models import AccountKind, TransferStatus
from payments.records import (
    AccountRef,
    TransferRecord,
    TransferSpec,
    escrow,
    platform_revenue,
    wallet,
)
from payments.verify import verify_ledger
from tests.support.ledger import COPOOL, NOW, fund, new_id


def escrow_for(subject: str) -> AccountRef:
    return escrow(AccountKind.POOL_ESCROW, subject, "EUR")


async def balance(sessionmaker: SessionMaker, user: uuid.UUID) -> service.WalletBalance:
    async with sessionmaker() as session:
        return await service.wallet_balance(session, user, "EUR")


async def stored(sessionmaker: SessionMaker, transfer_id: str) -> TransferRecord | None:
    async with sessionmaker() as session:
        return await ledger.get_transfer(session, transfer_id)


def hold_spec(user: uuid.UUID, amount: int, **kw: object) -> TransferSpec:
    return TransferSpec(
        id=new_id("hold"),
        debit=wallet(user, "EUR"),
        credit=escrow_for(str(user)),
        amount_minor=amount,
        kind="pool_join",
        ref="pool:test",
        **kw,  # type: ignore[arg-type]
    )


async def test_a_hold_reserves_and_a_partial_capture_returns_the_rest(
    sessionmaker: SessionMaker,
) -> None:
    uow, user = UnitOfWork(sessionmaker), uuid.uuid4()
    await fund(uow, user, 1_000)
    held = await service.hold(uow, hold_spec(user, 600), now=NOW)
    assert held.status is TransferStatus.PENDING
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 400, 600, 1_000)

    captured = await service.capture(uow, hold_id=held.id, amount_minor=450, now=NOW)
    again = await service.capture(uow, hold_id=held.id, amount_minor=450, now=NOW)
    hold_row = await stored(sessionmaker, held.id)
    assert (captured.kind, captured.amount_minor, captured.parent_id) == ("capture", 450, held.id)
    assert again.id == captured.id  # a retried capture is the same capture
    assert again.row_id == captured.row_id
    assert hold_row is not None
    assert hold_row.status is TransferStatus.POSTED
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 550, 0, 550)

    with pytest.raises(HoldNotPending):
        await service.void(uow, hold_id=held.id, now=NOW)
    with pytest.raises(HoldNotPending):  # another amount is another capture: refused
        await service.capture(uow, hold_id=held.id, amount_minor=100, now=NOW)
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 550, 0, 550)


async def test_a_hold_cannot_reserve_more_than_is_available(sessionmaker: SessionMaker) -> None:
    uow, user = UnitOfWork(sessionmaker), uuid.uuid4()
    await fund(uow, user, 500)
    await service.hold(uow, hold_spec(user, 300), now=NOW)
    with pytest.raises(InsufficientFunds):
        await service.hold(uow, hold_spec(user, 201), now=NOW)
    with pytest.raises(InsufficientFunds):
        await service.transfer(
            uow,
            TransferSpec(new_id(), wallet(user, "EUR"), escrow_for("x"), 201, "p", "r"),
            now=NOW,
        )
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 200, 300, 500)


async def test_a_void_releases_everything(sessionmaker: SessionMaker) -> None:
    uow, user = UnitOfWork(sessionmaker), uuid.uuid4()
    await fund(uow, user, 800)
    held = await service.hold(uow, hold_spec(user, 800), now=NOW)
    voided = await service.void(uow, hold_id=held.id, now=NOW)
    assert (await service.void(uow, hold_id=held.id, now=NOW)).id == voided.id  # a replay
    assert (voided.kind, voided.status, voided.amount_minor) == ("void", "voided", 800)
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 800, 0, 800)
    with pytest.raises(HoldNotPending):  # voided: it can no longer be captured
        await service.capture(uow, hold_id=held.id, now=NOW)


async def test_capture_more_than_held_is_refused_and_changes_nothing(
    sessionmaker: SessionMaker,
) -> None:
    uow, user = UnitOfWork(sessionmaker), uuid.uuid4()
    await fund(uow, user, 100)
    held = await service.hold(uow, hold_spec(user, 100), now=NOW)
    with pytest.raises(InvalidTransfer):
        await service.capture(uow, hold_id=held.id, amount_minor=101, now=NOW)
    with pytest.raises(InvalidTransfer):
        await service.capture(uow, hold_id=held.id, amount_minor=0, now=NOW)
    row = await stored(sessionmaker, held.id)
    assert row is not None
    assert row.status is TransferStatus.PENDING
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 0, 100, 100)


async def test_an_expired_hold_cannot_be_captured_and_the_sweep_releases_it(
    sessionmaker: SessionMaker,
) -> None:
    uow, user = UnitOfWork(sessionmaker), uuid.uuid4()
    await fund(uow, user, 300)
    held = await service.hold(
        uow, hold_spec(user, 300, expires_at=NOW + timedelta(minutes=5)), now=NOW
    )
    later = NOW + timedelta(minutes=6)
    with pytest.raises(HoldExpired):
        await service.capture(uow, hold_id=held.id, now=later)
    assert await service.expire_due_holds(uow, now=NOW + timedelta(minutes=1)) == 0
    assert await service.expire_due_holds(uow, now=later) >= 1
    row = await stored(sessionmaker, held.id)
    assert row is not None
    assert row.status is TransferStatus.EXPIRED
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 300, 0, 300)


async def test_refunds_never_exceed_what_was_moved(sessionmaker: SessionMaker) -> None:
    uow, user, payee = UnitOfWork(sessionmaker), uuid.uuid4(), uuid.uuid4()
    await fund(uow, user, 1_000)
    paid = await service.transfer(
        uow,
        TransferSpec(new_id(), wallet(user, "EUR"), wallet(payee, "EUR"), 700, "p", "r"),
        now=NOW,
    )
    first = await service.refund(
        uow, transfer_id=paid.id, refund_id=new_id("r"), amount_minor=400, now=NOW
    )
    replay = await service.refund(
        uow, transfer_id=paid.id, refund_id=first.id, amount_minor=400, now=NOW
    )
    with pytest.raises(RefundExceedsCaptured):
        await service.refund(
            uow, transfer_id=paid.id, refund_id=new_id("r"), amount_minor=301, now=NOW
        )
    await service.refund(uow, transfer_id=paid.id, refund_id=new_id("r"), amount_minor=300, now=NOW)
    assert replay.id == first.id
    assert replay.row_id == first.row_id
    assert (await balance(sessionmaker, user)).balance_minor == 1_000
    assert (await balance(sessionmaker, payee)).balance_minor == 0


async def test_a_transfer_id_replays_or_conflicts_but_never_pays_twice(
    sessionmaker: SessionMaker,
) -> None:
    uow, user, payee = UnitOfWork(sessionmaker), uuid.uuid4(), uuid.uuid4()
    spec = TransferSpec(new_id(), wallet(user, "EUR"), wallet(payee, "EUR"), 250, "p", "r")
    await fund(uow, user, 1_000)
    first = await service.transfer(uow, spec, now=NOW)
    second = await service.transfer(uow, spec, now=NOW + timedelta(seconds=5))
    with pytest.raises(TransferIdConflict):
        await service.transfer(
            uow, TransferSpec(spec.id, spec.debit, spec.credit, 251, "p", "r"), now=NOW
        )
    assert (first.row_id, first.created_at) == (second.row_id, second.created_at)
    assert (await balance(sessionmaker, payee)).balance_minor == 250
    assert (await balance(sessionmaker, user)).balance_minor == 750


async def test_a_linked_batch_posts_all_or_nothing(sessionmaker: SessionMaker) -> None:
    uow, user, organizer = UnitOfWork(sessionmaker), uuid.uuid4(), uuid.uuid4()
    pool = escrow_for(new_id("pool"))
    await fund(uow, user, 1_000)
    await service.transfer(
        uow, TransferSpec(new_id(), wallet(user, "EUR"), pool, 1_000, "join", "r"), now=NOW
    )
    payout = TransferSpec(new_id(), pool, wallet(organizer, "EUR"), 950, "payout", "r")
    too_big_fee = TransferSpec(new_id(), pool, platform_revenue("EUR"), 51, "fee", "r")
    with pytest.raises(InsufficientFunds):
        await service.post_linked(uow, [payout, too_big_fee], now=NOW)
    assert await stored(sessionmaker, payout.id) is None
    assert (await balance(sessionmaker, organizer)).balance_minor == 0
    fee = TransferSpec(new_id(), pool, platform_revenue("EUR"), 50, "fee", "r")
    posted = await service.post_linked(uow, [payout, fee], now=NOW)
    assert [t.amount_minor for t in posted] == [950, 50]
    assert (await balance(sessionmaker, organizer)).balance_minor == 950


async def test_currencies_never_mix(sessionmaker: SessionMaker) -> None:
    user = uuid.uuid4()
    with pytest.raises(CurrencyMismatch):
        await service.transfer(
            UnitOfWork(sessionmaker),
            TransferSpec(new_id(), wallet(user, "EUR"), wallet(user, "USD"), 1, "x", "r"),
            now=NOW,
        )


async def test_verify_finds_a_tampered_entry_and_the_cli_exits_non_zero(
    fresh_database_url: str, fresh_engine: AsyncEngine
) -> None:
    sessionmaker = create_sessionmaker(fresh_engine)
    uow, user = UnitOfWork(sessionmaker), uuid.uuid4()
    for amount in (100, 200, 300):
        await fund(uow, user, amount)
    held = await service.hold(uow, hold_spec(user, 50), now=NOW)
    await service.capture(uow, hold_id=held.id, amount_minor=20, now=NOW)
    assert await chain_all(sessionmaker) == 4
    async with sessionmaker() as session:
        report = await verify_ledger(session)
    assert report.ok, report.problem
    assert (report.entries, report.head_seq) == (4, 4)

    env = {**os.environ, "COPOOL_DATABASE_URL": fresh_database_url}
    ok = await asyncio.to_thread(
        subprocess.run, [COPOOL, "ledger", "verify"], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr

    async with fresh_engine.begin() as conn:  # someone edits history behind the ledger's back
        await conn.execute(text("UPDATE ledger_transfers SET amount_minor = 201 WHERE seq = 2"))
    async with sessionmaker() as session:
        report = await verify_ledger(session)
    assert not report.ok
    assert report.problem is not None
    assert report.problem.startswith("entry 2:")
    bad = await asyncio.to_thread(
        subprocess.run, [COPOOL, "ledger", "verify"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "entry 2" in bad.stderr


async def test_verify_finds_a_balance_that_does_not_match_its_transfers(
    fresh_engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(fresh_engine)
    await fund(sessionmaker, uuid.uuid4(), 100)
    await chain_all(sessionmaker)
    async with fresh_engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE ledger_accounts SET credits_posted = credits_posted + 1 "
                "WHERE kind = 'wallet'"
            )
        )
    async with sessionmaker() as session:
        report = await verify_ledger(session)
    assert not report.ok
    assert report.problem is not None
    assert "wallet:" in report.problem


async def test_holds_resolve_the_same_inside_a_callers_unit_of_work(
    sessionmaker: SessionMaker,
) -> None:
    """The primitives join the caller's transaction; a refused step under a savepoint undoes
    only itself, and nothing is visible before the commit."""
    uow, user = UnitOfWork(sessionmaker), uuid.uuid4()
    await fund(uow, user, 1_000)
    async with uow:
        first = await ledger.hold(uow.session, hold_spec(user, 400), now=NOW)
        second = await ledger.hold(uow.session, hold_spec(user, 300), now=NOW)
        captured = await ledger.capture(uow.session, hold_id=first.id, amount_minor=250, now=NOW)
        with pytest.raises(InvalidTransfer):
            async with uow.savepoint():
                await ledger.capture(uow.session, hold_id=second.id, amount_minor=301, now=NOW)
        voided = await ledger.void(uow.session, hold_id=second.id, now=NOW)
        readers = create_read_sessionmaker(uow.engine)  # a reader never waits for the writer
        assert await stored(readers, first.id) is None  # not visible before the commit
        await uow.commit()
    assert (captured.kind, captured.amount_minor) == ("capture", 250)
    assert (voided.kind, voided.amount_minor) == ("void", 300)
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 750, 0, 750)


async def test_a_unit_of_work_that_does_not_commit_moves_nothing(
    sessionmaker: SessionMaker,
) -> None:
    uow, user, payee = UnitOfWork(sessionmaker), uuid.uuid4(), uuid.uuid4()
    await fund(uow, user, 500)
    spec = TransferSpec(new_id(), wallet(user, "EUR"), wallet(payee, "EUR"), 200, "p", "r")

    async def fails_before_commit() -> None:
        async with uow:
            await ledger.hold(uow.session, hold_spec(user, 100), now=NOW)
            await ledger.transfer(uow.session, spec, now=NOW)
            raise RuntimeError("the use case fails after the ledger calls")

    with pytest.raises(RuntimeError, match="after the ledger calls"):
        await fails_before_commit()
    async with uow:  # left without commit: rolled back too
        await ledger.transfer(uow.session, spec, now=NOW)
    assert await stored(sessionmaker, spec.id) is None
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 500, 0, 500)
    assert await balance(sessionmaker, payee) == service.WalletBalance("EUR", 0, 0, 0)

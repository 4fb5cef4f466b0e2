"""Ledger semantics through the service functions, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import SessionMaker, create_sessionmaker
from payments import service
from payments.errors import (
    CurrencyMismatch,
    HoldExpired,
    HoldNotPending,
    InsufficientFunds,
    InvalidAmount,
    RefundExceedsCaptured,
    TransferIdConflict,
)
from payments.models import AccountKind
from tests.support.ledger import COPOOL, NOW, fund, new_id


def escrow_for(subject: str) -> service.AccountRef:
    return service.escrow(AccountKind.POOL_ESCROW, subject, "EUR")


async def balance(sessionmaker: SessionMaker, user: uuid.UUID) -> service.WalletBalance:
    async with sessionmaker() as session:
        return await service.wallet_balance(session, user, "EUR")


def hold_spec(user: uuid.UUID, amount: int, **kw: object) -> service.TransferSpec:
    return service.TransferSpec(
        id=new_id("hold"),
        debit=service.wallet(user, "EUR"),
        credit=escrow_for(str(user)),
        amount_minor=amount,
        kind="pool_join",
        ref="pool:test",
        **kw,  # type: ignore[arg-type]
    )


async def test_a_hold_reserves_and_a_partial_capture_returns_the_rest(
    sessionmaker: SessionMaker,
) -> None:
    user = uuid.uuid4()
    async with sessionmaker() as session:
        await fund(session, user, 1_000)
        held = await service.hold(session, hold_spec(user, 600), now=NOW)
    assert held.status == "pending"
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 400, 600, 1_000)

    async with sessionmaker() as session:
        captured = await service.capture(session, hold_id=held.id, amount_minor=450, now=NOW)
        again = await service.capture(session, hold_id=held.id, amount_minor=450, now=NOW)
        hold_row = await service.get_transfer(session, held.id)
    assert (captured.kind, captured.amount_minor, captured.parent_id) == ("capture", 450, held.id)
    assert again.id == captured.id  # a retried capture is the same capture
    assert hold_row is not None
    assert hold_row.status == "posted"
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 550, 0, 550)

    async with sessionmaker() as session:
        with pytest.raises(HoldNotPending):
            await service.void(session, hold_id=held.id, now=NOW)
        with pytest.raises(HoldNotPending):
            await service.capture(session, hold_id=held.id, amount_minor=100, now=NOW)


async def test_a_hold_cannot_reserve_more_than_is_available(sessionmaker: SessionMaker) -> None:
    user = uuid.uuid4()
    async with sessionmaker() as session:
        await fund(session, user, 500)
        await service.hold(session, hold_spec(user, 300), now=NOW)
        with pytest.raises(InsufficientFunds):
            await service.hold(session, hold_spec(user, 201), now=NOW)
        with pytest.raises(InsufficientFunds):
            await service.transfer(
                session,
                service.TransferSpec(
                    new_id(), service.wallet(user, "EUR"), escrow_for("x"), 201, "p", "r"
                ),
                now=NOW,
            )
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 200, 300, 500)


async def test_a_void_releases_everything(sessionmaker: SessionMaker) -> None:
    user = uuid.uuid4()
    async with sessionmaker() as session:
        await fund(session, user, 800)
        held = await service.hold(session, hold_spec(user, 800), now=NOW)
        voided = await service.void(session, hold_id=held.id, now=NOW)
        assert (await service.void(session, hold_id=held.id, now=NOW)).id == voided.id
    assert (voided.kind, voided.status, voided.amount_minor) == ("void", "voided", 800)
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 800, 0, 800)


async def test_capture_more_than_held_is_refused_and_changes_nothing(
    sessionmaker: SessionMaker,
) -> None:
    user = uuid.uuid4()
    async with sessionmaker() as session:
        await fund(session, user, 100)
        held = await service.hold(session, hold_spec(user, 100), now=NOW)
        with pytest.raises(InvalidAmount):
            await service.capture(session, hold_id=held.id, amount_minor=101, now=NOW)
        row = await service.get_transfer(session, held.id)
    assert row is not None
    assert row.status == "pending"


async def test_an_expired_hold_cannot_be_captured_and_the_sweep_releases_it(
    sessionmaker: SessionMaker,
) -> None:
    user = uuid.uuid4()
    async with sessionmaker() as session:
        await fund(session, user, 300)
        held = await service.hold(
            session, hold_spec(user, 300, expires_at=NOW + timedelta(minutes=5)), now=NOW
        )
        later = NOW + timedelta(minutes=6)
        with pytest.raises(HoldExpired):
            await service.capture(session, hold_id=held.id, now=later)
        assert await service.expire_due_holds(session, now=NOW + timedelta(minutes=1)) == 0
        assert await service.expire_due_holds(session, now=later) >= 1
        row = await service.get_transfer(session, held.id)
    assert row is not None
    assert row.status == "expired"
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 300, 0, 300)


async def test_refunds_never_exceed_what_was_moved(sessionmaker: SessionMaker) -> None:
    user, payee = uuid.uuid4(), uuid.uuid4()
    async with sessionmaker() as session:
        await fund(session, user, 1_000)
        paid = await service.transfer(
            session,
            service.TransferSpec(
                new_id(), service.wallet(user, "EUR"), service.wallet(payee, "EUR"), 700, "p", "r"
            ),
            now=NOW,
        )
        first = await service.refund(
            session, transfer_id=paid.id, refund_id=new_id("r"), amount_minor=400, now=NOW
        )
        replay = await service.refund(
            session, transfer_id=paid.id, refund_id=first.id, amount_minor=400, now=NOW
        )
        with pytest.raises(RefundExceedsCaptured):
            await service.refund(
                session, transfer_id=paid.id, refund_id=new_id("r"), amount_minor=301, now=NOW
            )
        await service.refund(
            session, transfer_id=paid.id, refund_id=new_id("r"), amount_minor=300, now=NOW
        )
    assert replay.id == first.id
    assert (await balance(sessionmaker, user)).balance_minor == 1_000
    assert (await balance(sessionmaker, payee)).balance_minor == 0


async def test_a_transfer_id_replays_or_conflicts_but_never_pays_twice(
    sessionmaker: SessionMaker,
) -> None:
    user, payee = uuid.uuid4(), uuid.uuid4()
    spec = service.TransferSpec(
        new_id(), service.wallet(user, "EUR"), service.wallet(payee, "EUR"), 250, "p", "r"
    )
    async with sessionmaker() as session:
        await fund(session, user, 1_000)
        first = await service.transfer(session, spec, now=NOW)
        second = await service.transfer(session, spec, now=NOW + timedelta(seconds=5))
        with pytest.raises(TransferIdConflict):
            await service.transfer(
                session,
                service.TransferSpec(spec.id, spec.debit, spec.credit, 251, "p", "r"),
                now=NOW,
            )
    assert (first.row_id, first.created_at) == (second.row_id, second.created_at)
    assert (await balance(sessionmaker, payee)).balance_minor == 250


async def test_a_linked_batch_posts_all_or_nothing(sessionmaker: SessionMaker) -> None:
    user, organizer = uuid.uuid4(), uuid.uuid4()
    escrow = escrow_for(new_id("pool"))
    async with sessionmaker() as session:
        await fund(session, user, 1_000)
        await service.transfer(
            session,
            service.TransferSpec(new_id(), service.wallet(user, "EUR"), escrow, 1_000, "join", "r"),
            now=NOW,
        )
        payout = service.TransferSpec(
            new_id(), escrow, service.wallet(organizer, "EUR"), 950, "payout", "r"
        )
        too_big_fee = service.TransferSpec(
            new_id(), escrow, service.platform_revenue("EUR"), 51, "fee", "r"
        )
        with pytest.raises(InsufficientFunds):
            await service.post_linked(session, [payout, too_big_fee], now=NOW)
        assert await service.get_transfer(session, payout.id) is None
        fee = service.TransferSpec(
            new_id(), escrow, service.platform_revenue("EUR"), 50, "fee", "r"
        )
        posted = await service.post_linked(session, [payout, fee], now=NOW)
    assert [t.amount_minor for t in posted] == [950, 50]
    assert (await balance(sessionmaker, organizer)).balance_minor == 950


async def test_currencies_never_mix(sessionmaker: SessionMaker) -> None:
    user = uuid.uuid4()
    async with sessionmaker() as session:
        with pytest.raises(CurrencyMismatch):
            await service.transfer(
                session,
                service.TransferSpec(
                    new_id(), service.wallet(user, "EUR"), service.wallet(user, "USD"), 1, "x", "r"
                ),
                now=NOW,
            )


async def test_verify_finds_a_tampered_entry_and_the_cli_exits_non_zero(
    fresh_database_url: str, fresh_engine: AsyncEngine
) -> None:
    sessionmaker = create_sessionmaker(fresh_engine)
    user = uuid.uuid4()
    async with sessionmaker() as session:
        for amount in (100, 200, 300):
            await fund(session, user, amount)
        held = await service.hold(session, hold_spec(user, 50), now=NOW)
        await service.capture(session, hold_id=held.id, amount_minor=20, now=NOW)
        assert await service.chain_all(session) == 4
        report = await service.verify_ledger(session)
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
        report = await service.verify_ledger(session)
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
    async with sessionmaker() as session:
        await fund(session, uuid.uuid4(), 100)
        await service.chain_all(session)
    async with fresh_engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE ledger_accounts SET credits_posted = credits_posted + 1 "
                "WHERE kind = 'wallet'"
            )
        )
    async with sessionmaker() as session:
        report = await service.verify_ledger(session)
    assert not report.ok
    assert report.problem is not None
    assert "wallet:" in report.problem


async def test_holds_resolve_the_same_inside_a_callers_open_transaction(
    sessionmaker: SessionMaker,
) -> None:
    """With a transaction already under way the ledger joins it instead of group-committing."""
    user = uuid.uuid4()
    async with sessionmaker() as session:
        await fund(session, user, 1_000)
        first = await service.hold(session, hold_spec(user, 400), now=NOW)
        second = await service.hold(session, hold_spec(user, 300), now=NOW)
        await session.exec(text("SELECT 1"))  # the caller's own transaction is open
        captured = await service.capture(session, hold_id=first.id, amount_minor=250, now=NOW)
        await session.exec(text("SELECT 1"))
        with pytest.raises(InvalidAmount):
            await service.capture(session, hold_id=second.id, amount_minor=301, now=NOW)
        await session.exec(text("SELECT 1"))
        voided = await service.void(session, hold_id=second.id, now=NOW)
    assert (captured.kind, captured.amount_minor) == ("capture", 250)
    assert (voided.kind, voided.amount_minor) == ("void", 300)
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 750, 0, 750)

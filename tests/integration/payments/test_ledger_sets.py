"""Many holds or voids at once (`ledger.hold_all`, `ledger.void_all`: one set-based statement on
PostgreSQL, one call after another on SQLite): every account ends exactly where the same calls
one by one would leave it, and a refusal leaves nothing once the caller rolls back."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Table, select

from app.db import SessionMaker
from app.uow import UnitOfWork
from payments import ledger, service
from payments.errors import HoldNotPending, InsufficientFunds, TransferIdConflict
from payments.models import Account, AccountKind, TransferStatus
from payments.records import AccountRef, TransferSpec, escrow, wallet
from payments.verify import verify_ledger
from tests.support.ledger import NOW, fund, new_id

POOL = escrow(AccountKind.POOL_ESCROW, "sets", "EUR")
ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]


def hold(
    user: uuid.UUID, amount: int, hold_id: str | None = None, into: AccountRef = POOL
) -> TransferSpec:
    return TransferSpec(
        id=hold_id or new_id("hold"),
        debit=wallet(user, "EUR"),
        credit=into,
        amount_minor=amount,
        kind="pool_join",
        ref="pool:sets",
        expires_at=NOW + timedelta(days=1),
    )


async def balances(sessionmaker: SessionMaker, *users: uuid.UUID) -> list[tuple[int, int]]:
    async with sessionmaker() as session:
        found = [await service.wallet_balance(session, user, "EUR") for user in users]
    return [(b.available_minor, b.held_minor) for b in found]


async def escrow_pending(sessionmaker: SessionMaker, account: AccountRef) -> int:
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(ACCOUNTS.c.credits_pending).where(ACCOUNTS.c.key == account.key)
            )
        ).first()
    return int(row[0]) if row else 0


async def test_holds_and_voids_in_sets_move_exactly_what_single_calls_would(
    sessionmaker: SessionMaker,
) -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for user in (a, b, c):
        await fund(sessionmaker, user, 1_000)
    pool = escrow(AccountKind.POOL_ESCROW, uuid.uuid4().hex, "EUR")
    first = [hold(a, 100, into=pool), hold(b, 200, into=pool), hold(c, 300, into=pool)]
    first.append(hold(a, 50, into=pool))
    async with UnitOfWork(sessionmaker) as uow:
        await ledger.hold_all(uow.session, first, now=NOW)
        await uow.commit()
    async with sessionmaker() as session:
        records = [await ledger.get_transfer(session, spec.id) for spec in first]
    assert all(r is not None and r.status is TransferStatus.PENDING for r in records)
    assert await balances(sessionmaker, a, b, c) == [(850, 150), (800, 200), (700, 300)]
    assert await escrow_pending(sessionmaker, pool) == 650

    async with UnitOfWork(sessionmaker) as uow:
        await ledger.void_all(uow.session, [first[0].id, first[2].id], now=NOW)
        await uow.commit()
    async with sessionmaker() as session:
        for voided in (first[0], first[2]):
            entry = await ledger.get_transfer(session, f"{voided.id}/voided")
            assert entry is not None
            assert (entry.parent_id, entry.amount_minor) == (voided.id, voided.amount_minor)
    assert await balances(sessionmaker, a, b, c) == [(950, 50), (800, 200), (1_000, 0)]
    assert await escrow_pending(sessionmaker, pool) == 250
    async with sessionmaker() as session:
        report = await verify_ledger(session)
    assert report.ok, report.problem


@pytest.mark.parametrize("fault", ["short", "reused id", "not pending"])
async def test_a_refused_set_leaves_nothing_once_rolled_back(
    sessionmaker: SessionMaker, fault: str
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await fund(sessionmaker, a, 1_000)
    await fund(sessionmaker, b, 1_000)
    earlier = hold(a, 100)
    async with UnitOfWork(sessionmaker) as uow:
        await ledger.hold(uow.session, earlier, now=NOW)
        await uow.commit()
    if fault == "not pending":
        async with UnitOfWork(sessionmaker) as uow:
            await ledger.capture(uow.session, hold_id=earlier.id, amount_minor=100, now=NOW)
            await uow.commit()

    async def refused_step(uow: UnitOfWork) -> None:
        if fault == "short":  # b's two holds together pass what b has
            await ledger.hold_all(uow.session, [hold(a, 10), hold(b, 600), hold(b, 600)], now=NOW)
        elif fault == "reused id":
            await ledger.hold_all(
                uow.session, [hold(b, 10), hold(a, 10, hold_id=earlier.id)], now=NOW
            )
        else:
            await ledger.void_all(uow.session, [second.id, earlier.id], now=NOW)

    second = hold(b, 100)
    async with UnitOfWork(sessionmaker) as uow:
        await ledger.hold(uow.session, second, now=NOW)
        await uow.commit()
    expected = {"short": InsufficientFunds, "reused id": TransferIdConflict}
    async with UnitOfWork(sessionmaker) as uow:
        with pytest.raises(expected.get(fault, HoldNotPending)):
            await refused_step(uow)
    held_by_a = 0 if fault == "not pending" else 100
    assert await balances(sessionmaker, a, b) == [(900, held_by_a), (900, 100)]
    async with sessionmaker() as session:
        report = await verify_ledger(session)
    assert report.ok, report.problem


async def test_accounts_the_caller_locked_are_not_opened_or_locked_again(
    sessionmaker: SessionMaker,
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await fund(sessionmaker, a, 1_000)
    await fund(sessionmaker, b, 1_000)
    pool = escrow(AccountKind.POOL_ESCROW, uuid.uuid4().hex, "EUR")
    holds = [hold(a, 300, into=pool), hold(b, 400, into=pool)]
    async with UnitOfWork(sessionmaker) as uow:
        # The escrow is new: opened, then locked after the wallets (a higher id).
        ids, available = await ledger.open_and_lock(
            uow.session, [wallet(a, "EUR"), wallet(b, "EUR"), pool], NOW
        )
        assert sorted(ids) == sorted([wallet(a, "EUR").key, wallet(b, "EUR").key, pool.key])
        assert available[ids[wallet(a, "EUR").key]] == 1_000
        assert available[ids[pool.key]] == 0
        await ledger.hold_all(uow.session, holds, now=NOW, locked=ids)
        await ledger.void_all(uow.session, [holds[0].id], now=NOW, locked=True)
        await uow.commit()
    assert await balances(sessionmaker, a, b) == [(1_000, 0), (600, 400)]
    assert await escrow_pending(sessionmaker, pool) == 400
    async with sessionmaker() as session:
        report = await verify_ledger(session)
    assert report.ok, report.problem


async def test_a_replaced_hold_frees_its_money_for_the_new_one(sessionmaker: SessionMaker) -> None:
    """replace_holds: a source affords its new holds less the holds released, to the unit."""
    a = uuid.uuid4()
    await fund(sessionmaker, a, 1_000)
    old = hold(a, 800)
    async with UnitOfWork(sessionmaker) as uow:
        await ledger.hold(uow.session, old, now=NOW)
        await uow.commit()
    async with UnitOfWork(sessionmaker) as uow:
        with pytest.raises(InsufficientFunds):
            await ledger.replace_holds(uow.session, [old.id], [hold(a, 1_001)], now=NOW)
    assert await balances(sessionmaker, a) == [(200, 800)]
    async with UnitOfWork(sessionmaker) as uow:
        await ledger.replace_holds(uow.session, [old.id], [hold(a, 1_000)], now=NOW)
        await uow.commit()
    assert await balances(sessionmaker, a) == [(0, 1_000)]
    async with sessionmaker() as session:
        report = await verify_ledger(session)
    assert report.ok, report.problem

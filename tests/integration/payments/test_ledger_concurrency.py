"""Real concurrency on PostgreSQL: many connections at once, then the invariants."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from app.db import SessionMaker, create_engine, create_sessionmaker
from app.uow import UnitOfWork
from payments import ledger, service
from payments.chain_writer import chain_all, chain_pending
from payments.errors import HoldNotPending, InsufficientFunds, TransferIdConflict
from payments.models import AccountKind, TransferStatus
from payments.records import TransferSpec, escrow, wallet
from payments.verify import verify_ledger
from tests.support.ledger import NOW, fund, new_id


@pytest.fixture
async def pg_sessions(postgres_url: str) -> AsyncIterator[SessionMaker]:
    engine = create_engine(postgres_url, pool_size=40)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def test_200_concurrent_holds_on_a_wallet_of_50_exactly_50_succeed(
    pg_sessions: SessionMaker,
) -> None:
    user = uuid.uuid4()
    await fund(pg_sessions, user, 5_000)
    pool = escrow(AccountKind.POOL_ESCROW, uuid.uuid4(), "EUR")

    async def one_hold() -> bool:
        spec = TransferSpec(new_id("hold"), wallet(user, "EUR"), pool, 100, "pool_join", "r")
        try:
            await service.hold(UnitOfWork(pg_sessions), spec, now=NOW)
        except InsufficientFunds:
            return False
        return True

    results = await asyncio.gather(*(one_hold() for _ in range(200)))
    assert results.count(True) == 50
    async with pg_sessions() as session:
        balance = await service.wallet_balance(session, user, "EUR")
    assert (balance.available_minor, balance.held_minor) == (0, 5_000)


async def test_100_concurrent_transfers_with_one_id_move_money_once(
    pg_sessions: SessionMaker,
) -> None:
    payer, payee = uuid.uuid4(), uuid.uuid4()
    await fund(pg_sessions, payer, 10_000)
    spec = TransferSpec(new_id(), wallet(payer, "EUR"), wallet(payee, "EUR"), 300, "p", "r")

    async def attempt() -> int:
        return (await service.transfer(UnitOfWork(pg_sessions), spec, now=NOW)).row_id

    row_ids = await asyncio.gather(*(attempt() for _ in range(100)))
    assert len(set(row_ids)) == 1
    async with pg_sessions() as session:
        assert (await service.wallet_balance(session, payee, "EUR")).balance_minor == 300
        assert (await service.wallet_balance(session, payer, "EUR")).balance_minor == 9_700


async def test_concurrent_capture_and_void_resolve_a_hold_once(pg_sessions: SessionMaker) -> None:
    user = uuid.uuid4()
    fare = escrow(AccountKind.RIDE_ESCROW, uuid.uuid4(), "EUR")
    await fund(pg_sessions, user, 1_000)
    held = await service.hold(
        UnitOfWork(pg_sessions),
        TransferSpec(new_id(), wallet(user, "EUR"), fare, 1_000, "fare", "r"),
        now=NOW,
    )

    async def resolve(i: int) -> str:
        uow = UnitOfWork(pg_sessions)
        try:
            if i % 2:
                await service.capture(uow, hold_id=held.id, amount_minor=600, now=NOW)
            else:
                await service.void(uow, hold_id=held.id, now=NOW)
        except HoldNotPending:
            return "refused"
        return "done"

    outcomes = await asyncio.gather(*(resolve(i) for i in range(20)))
    async with pg_sessions() as session:
        hold_row = await ledger.get_transfer(session, held.id)
        balance = await service.wallet_balance(session, user, "EUR")
    assert hold_row is not None
    assert hold_row.status in {TransferStatus.POSTED, TransferStatus.VOIDED}
    # One resolution wins; the ten calls of the same kind replay it, the ten others are refused.
    assert outcomes.count("done") == 10
    assert outcomes.count("refused") == 10
    expected = 400 if hold_row.status is TransferStatus.POSTED else 1_000
    assert (balance.balance_minor, balance.held_minor) == (expected, 0)


async def test_concurrent_writers_and_chainers_make_one_chain(
    fresh_pg_sessions: SessionMaker,
) -> None:
    users = [uuid.uuid4() for _ in range(8)]
    for user in users:
        await fund(fresh_pg_sessions, user, 100_000)

    async def writer(i: int) -> None:
        payer, payee = users[i % 8], users[(i + 3) % 8]
        await service.transfer(
            UnitOfWork(fresh_pg_sessions),
            TransferSpec(new_id(), wallet(payer, "EUR"), wallet(payee, "EUR"), 7, "p", "r"),
            now=NOW,
        )

    async def chainer() -> int:
        total = 0
        for _ in range(30):
            async with fresh_pg_sessions() as session:
                total += await chain_pending(session, limit=25)
                await session.commit()
            await asyncio.sleep(0.005)
        return total

    results = await asyncio.gather(*(writer(i) for i in range(300)), *(chainer() for _ in range(6)))
    await chain_all(fresh_pg_sessions)
    async with fresh_pg_sessions() as session:
        report = await verify_ledger(session)
    assert sum(r for r in results if isinstance(r, int)) <= report.entries
    assert report.ok, report.problem
    assert report.unchained == 0
    assert report.entries == report.head_seq == 8 + 300


async def test_one_id_with_different_amounts_at_once_pays_once_and_refuses_the_rest(
    pg_sessions: SessionMaker,
) -> None:
    payer, payee = uuid.uuid4(), uuid.uuid4()
    await fund(pg_sessions, payer, 10_000)
    transfer_id = new_id()

    async def attempt(amount: int) -> str:
        spec = TransferSpec(
            transfer_id, wallet(payer, "EUR"), wallet(payee, "EUR"), amount, "p", "r"
        )
        try:
            await service.transfer(UnitOfWork(pg_sessions), spec, now=NOW)
        except TransferIdConflict:
            return "conflict"
        return f"paid {amount}"

    outcomes = await asyncio.gather(*(attempt(100 + i) for i in range(30)))
    paid = [o for o in outcomes if o.startswith("paid")]
    assert len(paid) == 1
    assert outcomes.count("conflict") == 29
    async with pg_sessions() as session:
        balance = await service.wallet_balance(session, payee, "EUR")
    assert balance.balance_minor == int(paid[0].split()[1])


async def test_concurrent_use_cases_with_several_ledger_calls_do_not_deadlock(
    pg_sessions: SessionMaker,
) -> None:
    """Units of work that each hold and pay between the same wallets, in opposite orders,
    lock their accounts in one order: all of them commit, and the money adds up."""
    users = [uuid.uuid4() for _ in range(4)]
    for user in users:
        await fund(pg_sessions, user, 1_000)
    pool = escrow(AccountKind.POOL_ESCROW, uuid.uuid4(), "EUR")

    async def use_case(i: int) -> None:
        payer, payee = users[i % 4], users[(i + 1 + i % 3) % 4]
        hold = TransferSpec(new_id("hold"), wallet(payer, "EUR"), pool, 3, "pool_join", "r")
        pay = TransferSpec(new_id("pay"), wallet(payee, "EUR"), wallet(payer, "EUR"), 2, "p", "r")
        uow = UnitOfWork(pg_sessions)
        async with uow:
            ids = await ledger.open_accounts(
                uow.session, [hold.debit, hold.credit, pay.debit], now=NOW
            )
            await ledger.lock_accounts(uow.session, list(ids.values()))
            await ledger.hold(uow.session, hold, now=NOW)
            await ledger.transfer(uow.session, pay, now=NOW)
            await uow.commit()

    await asyncio.gather(*(use_case(i) for i in range(60)))
    async with pg_sessions() as session:
        balances = [await service.wallet_balance(session, user, "EUR") for user in users]
    assert sum(b.balance_minor for b in balances) == 4_000  # payments only move between them
    assert sum(b.held_minor for b in balances) == 60 * 3

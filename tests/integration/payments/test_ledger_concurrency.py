"""Real concurrency on PostgreSQL: many connections at once, then the invariants."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from app.db import SessionMaker, create_engine, create_sessionmaker
from payments import service
from payments.errors import InsufficientFunds
from payments.models import AccountKind
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
    async with pg_sessions() as session:
        await fund(session, user, 5_000)
    escrow = service.escrow(AccountKind.POOL_ESCROW, uuid.uuid4(), "EUR")

    async def one_hold() -> bool:
        spec = service.TransferSpec(
            new_id("hold"), service.wallet(user, "EUR"), escrow, 100, "pool_join", "r"
        )
        async with pg_sessions() as session:
            try:
                await service.hold(session, spec, now=NOW)
            except InsufficientFunds:
                return False
            return True

    results = await asyncio.gather(*(one_hold() for _ in range(200)))
    assert results.count(True) == 50
    async with pg_sessions() as session:
        wallet = await service.wallet_balance(session, user, "EUR")
    assert (wallet.available_minor, wallet.held_minor) == (0, 5_000)


async def test_100_concurrent_transfers_with_one_id_move_money_once(
    pg_sessions: SessionMaker,
) -> None:
    payer, payee = uuid.uuid4(), uuid.uuid4()
    async with pg_sessions() as session:
        await fund(session, payer, 10_000)
    spec = service.TransferSpec(
        new_id(), service.wallet(payer, "EUR"), service.wallet(payee, "EUR"), 300, "p", "r"
    )

    async def attempt() -> int | None:
        async with pg_sessions() as session:
            return (await service.transfer(session, spec, now=NOW)).row_id

    row_ids = await asyncio.gather(*(attempt() for _ in range(100)))
    assert len(set(row_ids)) == 1
    async with pg_sessions() as session:
        assert (await service.wallet_balance(session, payee, "EUR")).balance_minor == 300
        assert (await service.wallet_balance(session, payer, "EUR")).balance_minor == 9_700


async def test_concurrent_capture_and_void_resolve_a_hold_once(pg_sessions: SessionMaker) -> None:
    user = uuid.uuid4()
    escrow = service.escrow(AccountKind.RIDE_ESCROW, uuid.uuid4(), "EUR")
    async with pg_sessions() as session:
        await fund(session, user, 1_000)
        held = await service.hold(
            session,
            service.TransferSpec(new_id(), service.wallet(user, "EUR"), escrow, 1_000, "fare", "r"),
            now=NOW,
        )

    async def resolve(i: int) -> str:
        async with pg_sessions() as session:
            try:
                if i % 2:
                    await service.capture(session, hold_id=held.id, amount_minor=600, now=NOW)
                else:
                    await service.void(session, hold_id=held.id, now=NOW)
            except service.HoldNotPending:
                return "refused"
            return "done"

    outcomes = await asyncio.gather(*(resolve(i) for i in range(20)))
    async with pg_sessions() as session:
        hold_row = await service.get_transfer(session, held.id)
        wallet = await service.wallet_balance(session, user, "EUR")
    assert hold_row is not None
    assert hold_row.status in {"posted", "voided"}
    # One resolution wins; the ten calls of the same kind replay it, the ten others are refused.
    assert outcomes.count("done") == 10
    expected = 400 if hold_row.status == "posted" else 1_000
    assert (wallet.balance_minor, wallet.held_minor) == (expected, 0)


async def test_concurrent_writers_and_chainers_make_one_chain(
    fresh_pg_sessions: SessionMaker,
) -> None:
    users = [uuid.uuid4() for _ in range(8)]
    async with fresh_pg_sessions() as session:
        for user in users:
            await fund(session, user, 100_000)

    async def writer(i: int) -> None:
        payer, payee = users[i % 8], users[(i + 3) % 8]
        async with fresh_pg_sessions() as session:
            await service.transfer(
                session,
                service.TransferSpec(
                    new_id(),
                    service.wallet(payer, "EUR"),
                    service.wallet(payee, "EUR"),
                    7,
                    "p",
                    "r",
                ),
                now=NOW,
            )

    async def chainer() -> int:
        total = 0
        for _ in range(30):
            async with fresh_pg_sessions() as session:
                total += await service.chain_pending(session, limit=25)
            await asyncio.sleep(0.005)
        return total

    results = await asyncio.gather(*(writer(i) for i in range(300)), *(chainer() for _ in range(6)))
    async with fresh_pg_sessions() as session:
        await service.chain_all(session)
        report = await service.verify_ledger(session)
    assert sum(r for r in results if isinstance(r, int)) <= report.entries
    assert report.ok, report.problem
    assert report.unchained == 0
    assert report.entries == report.head_seq == 8 + 300


async def test_one_id_with_different_amounts_at_once_pays_once_and_refuses_the_rest(
    pg_sessions: SessionMaker,
) -> None:
    payer, payee = uuid.uuid4(), uuid.uuid4()
    async with pg_sessions() as session:
        await fund(session, payer, 10_000)
    transfer_id = new_id()

    async def attempt(amount: int) -> str:
        spec = service.TransferSpec(
            transfer_id,
            service.wallet(payer, "EUR"),
            service.wallet(payee, "EUR"),
            amount,
            "p",
            "r",
        )
        async with pg_sessions() as session:
            try:
                await service.transfer(session, spec, now=NOW)
            except service.TransferIdConflict:
                return "conflict"
            return f"paid {amount}"

    outcomes = await asyncio.gather(*(attempt(100 + i) for i in range(30)))
    paid = [o for o in outcomes if o.startswith("paid")]
    assert len(paid) == 1
    assert outcomes.count("conflict") == 29
    async with pg_sessions() as session:
        balance = await service.wallet_balance(session, payee, "EUR")
    assert balance.balance_minor == int(paid[0].split()[1])

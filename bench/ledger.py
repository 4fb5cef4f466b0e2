"""Ledger benchmark on PostgreSQL: prints figures; run on demand (`make bench`), never in tests.

  posted transfers/s with 1, 8 and 64 concurrent clients (chain writer running, as in the app)
  the same at 64 clients with no chain writer: the chain's overhead
  hold + capture pairs/s at 64 clients
  how fast the chain writer chains a backlog (entries/s)

Each client is one asyncio task with its own session; wallets are picked at random among many,
so the figures measure the ledger, not one hot row. Environment: COPOOL_BENCH_POSTGRES_DSN
(default postgresql://postgres@127.0.0.1:5432/postgres), COPOOL_BENCH_SECONDS (default 5).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
from sqlalchemy import func, not_, select

from app.db import SessionMaker, create_engine, create_sessionmaker
from app.migrate import upgrade
from app.uow import UnitOfWork
from payments import service
from payments.chain_writer import TRANSFERS, chain_all, run_chain_writer
from payments.models import AccountKind
from payments.records import TransferSpec, escrow, external_funding, wallet
from payments.verify import verify_ledger

ADMIN_DSN = os.environ.get(
    "COPOOL_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECONDS = float(os.environ.get("COPOOL_BENCH_SECONDS", "5"))
WALLETS = 2_000
NOW = datetime.now(UTC)


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fund_wallets(sessions: SessionMaker, users: list[uuid.UUID]) -> None:
    uow = UnitOfWork(sessions)
    for user in users:
        await service.transfer(
            uow,
            TransferSpec(
                f"fund:{user}",
                external_funding("bench", "EUR"),
                wallet(user, "EUR"),
                10**9,
                "top_up",
                "bench",
            ),
            now=NOW,
        )


async def run_clients(
    clients: int, seconds: float, operation: Callable[[], Awaitable[None]]
) -> tuple[int, float]:
    """Run `clients` loops of `operation` for `seconds`; return (operations done, elapsed)."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await operation()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done, time.perf_counter() - started


def transfer_op(sessions: SessionMaker, users: list[uuid.UUID]) -> Callable[[], Awaitable[None]]:
    async def op() -> None:
        payer, payee = random.sample(users, 2)
        await service.transfer(
            UnitOfWork(sessions),
            TransferSpec(
                uuid.uuid4().hex, wallet(payer, "EUR"), wallet(payee, "EUR"), 1, "payment", "bench"
            ),
            now=NOW,
        )

    return op


def hold_capture_op(
    sessions: SessionMaker, users: list[uuid.UUID]
) -> Callable[[], Awaitable[None]]:
    async def op() -> None:
        payer = random.choice(users)
        fare = escrow(AccountKind.RIDE_ESCROW, str(random.randrange(WALLETS)), "EUR")
        hold_id = uuid.uuid4().hex
        uow = UnitOfWork(sessions)
        await service.hold(
            uow, TransferSpec(hold_id, wallet(payer, "EUR"), fare, 10, "fare", "bench"), now=NOW
        )
        await service.capture(uow, hold_id=hold_id, amount_minor=7, now=NOW)

    return op


async def unchained(sessions: SessionMaker) -> int:
    async with sessions() as session:
        query = (
            select(func.count())
            .select_from(TRANSFERS)
            .where(TRANSFERS.c.seq.is_(None), not_(TRANSFERS.c.is_hold))
        )
        return int((await session.execute(query)).scalar_one())


async def main() -> None:
    name = f"copool_bench_{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE DATABASE "{name}"')
    url = (
        ADMIN_DSN.rpartition("/")[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name
    )
    engine = create_engine(url, pool_size=64)
    sessions = create_sessionmaker(engine)
    try:
        await upgrade(engine)
        users = [uuid.uuid4() for _ in range(WALLETS)]
        await fund_wallets(sessions, users)
        print(f"ledger benchmark: PostgreSQL, {WALLETS} wallets, {SECONDS:g} s per figure")

        def chain_writer() -> asyncio.Task[None]:
            # The chain writer as every app process runs it (Settings.ledger_chain_interval_s).
            return asyncio.create_task(run_chain_writer(sessions, interval_s=0.2))

        sequencer = chain_writer()
        for clients in (1, 8, 64):
            done, elapsed = await run_clients(clients, SECONDS, transfer_op(sessions, users))
            print(f"  posted transfers/s, {clients:>2} clients, chain on : {done / elapsed:8.0f}")
        done, elapsed = await run_clients(64, SECONDS, hold_capture_op(sessions, users))
        print(f"  hold+capture pairs/s, 64 clients, chain on: {done / elapsed:8.0f}")
        await asyncio.sleep(0.5)
        print(f"  entries left unchained 0.5 s after the runs: {await unchained(sessions)}")
        sequencer.cancel()

        # Chain on and off, interleaved, so that table growth and noise hit both alike.
        # Each run starts with nothing left to chain; the backlog a chain-off run leaves is
        # chained afterwards, timed: how fast the writer catches up.
        rates: dict[bool, list[float]] = {True: [], False: []}
        catch_up: list[float] = []
        for _ in range(3):
            for chain_on in (False, True):
                writer = chain_writer() if chain_on else None
                done, elapsed = await run_clients(64, SECONDS, transfer_op(sessions, users))
                rates[chain_on].append(done / elapsed)
                if writer is not None:
                    writer.cancel()
                started = time.perf_counter()
                chained = await chain_all(sessions)
                if not chain_on:
                    catch_up.append(chained / (time.perf_counter() - started))
        with_chain, without = (sum(rates[k]) / len(rates[k]) for k in (True, False))
        print(f"  64 clients, interleaved x3: chain on {with_chain:6.0f}/s, off {without:6.0f}/s")
        print(f"  chain overhead at 64 clients: {100 * (1 - with_chain / without):5.1f} %")
        print(f"  chain writer catching up a backlog: {sum(catch_up) / 3:8.0f} entries/s")
        async with sessions() as session:
            report = await verify_ledger(session)
        print(f"  verify: ok={report.ok} entries={report.entries} problem={report.problem}")
    finally:
        await engine.dispose()
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())

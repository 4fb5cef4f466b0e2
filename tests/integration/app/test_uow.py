"""The unit of work's contract, on SQLite and PostgreSQL: one use case, one transaction."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text

from app.accounts.models import User
from app.db import SessionMaker
from app.errors import ServiceBusy
from app.uow import UnitOfWork, commit_outcome_unknown, use_case
from payments import ledger, service
from payments.errors import InsufficientFunds
from payments.models import AccountKind
from payments.records import TransferSpec, escrow, wallet
from payments.verify import verify_ledger
from tests.support.ledger import NOW, fund, new_id


def a_user() -> User:
    return User(
        email=f"{uuid.uuid4().hex}@example.com",
        password_hash="x",
        display_name="U",
        roles="member",
        created_at=NOW,
    )


async def users_named(sessionmaker: SessionMaker, email: str) -> int:
    async with sessionmaker() as session:
        found = await session.execute(
            select(func.count()).select_from(User).where(User.email == email)  # type: ignore[arg-type]
        )
        return int(found.scalar_one())


def pay(payer: uuid.UUID, payee: uuid.UUID, amount: int) -> TransferSpec:
    return TransferSpec(new_id("pay"), wallet(payer, "EUR"), wallet(payee, "EUR"), amount, "p", "r")


async def test_two_ledger_calls_and_a_domain_row_commit_together(
    sessionmaker: SessionMaker,
) -> None:
    payer, payee = uuid.uuid4(), uuid.uuid4()
    await fund(sessionmaker, payer, 1_000)
    uow, user = UnitOfWork(sessionmaker), a_user()
    async with uow:
        uow.session.add(user)
        await ledger.hold(
            uow.session,
            TransferSpec(
                new_id("hold"), wallet(payer, "EUR"), escrow(AccountKind.POOL_ESCROW, "p", "EUR"),
                300, "pool_join", "r",
            ),
            now=NOW,
        )  # fmt: skip
        await ledger.transfer(uow.session, pay(payer, payee, 200), now=NOW)
        await uow.commit()
    async with sessionmaker() as session:
        assert await service.wallet_balance(session, payer, "EUR") == service.WalletBalance(
            "EUR", 500, 300, 800
        )
    assert await users_named(sessionmaker, user.email) == 1


async def test_leaving_without_commit_undoes_every_ledger_call_and_row(
    sessionmaker: SessionMaker,
) -> None:
    payer, payee = uuid.uuid4(), uuid.uuid4()
    await fund(sessionmaker, payer, 1_000)
    uow, user = UnitOfWork(sessionmaker), a_user()

    async def failing_use_case() -> None:
        async with uow:
            uow.session.add(user)
            await ledger.transfer(uow.session, pay(payer, payee, 100), now=NOW)
            await ledger.transfer(uow.session, pay(payer, payee, 200), now=NOW)
            raise RuntimeError("the use case fails after two ledger calls")

    with pytest.raises(RuntimeError, match="after two ledger calls"):
        await failing_use_case()
    async with uow:  # the same unit of work opens a fresh transaction
        assert (await service.wallet_balance(uow.session, payee, "EUR")).balance_minor == 0
        assert (await service.wallet_balance(uow.session, payer, "EUR")).balance_minor == 1_000
    assert await users_named(sessionmaker, user.email) == 0


async def test_after_commit_callbacks_run_only_after_a_commit(sessionmaker: SessionMaker) -> None:
    seen: list[str] = []

    async def record(what: str) -> None:
        seen.append(what)

    uow = UnitOfWork(sessionmaker)
    async with uow:
        uow.after_commit(record, "rolled back")
    async with uow:
        uow.after_commit(record, "committed")
        assert seen == []  # not before the commit
        await uow.commit()
    assert seen == ["committed"]


async def test_a_failing_after_commit_callback_does_not_undo_the_commit(
    sessionmaker: SessionMaker,
) -> None:
    async def broken() -> None:
        raise ConnectionError("the queue is down")

    uow, user = UnitOfWork(sessionmaker), a_user()
    async with uow:
        uow.session.add(user)
        uow.after_commit(broken)
        await uow.commit()
    assert await users_named(sessionmaker, user.email) == 1


async def test_a_savepoint_lets_a_use_case_go_on_after_a_refused_ledger_call(
    sessionmaker: SessionMaker,
) -> None:
    payer, payee = uuid.uuid4(), uuid.uuid4()
    await fund(sessionmaker, payer, 500)
    uow = UnitOfWork(sessionmaker)
    async with uow:
        with pytest.raises(InsufficientFunds):
            async with uow.savepoint():
                await ledger.transfer(uow.session, pay(payer, payee, 900), now=NOW)
        await ledger.transfer(uow.session, pay(payer, payee, 400), now=NOW)  # the fallback
        await uow.commit()
    async with sessionmaker() as session:
        assert (await service.wallet_balance(session, payee, "EUR")).balance_minor == 400
        assert (await service.wallet_balance(session, payer, "EUR")).balance_minor == 100


async def test_a_unit_of_work_cannot_be_opened_twice_at_once(sessionmaker: SessionMaker) -> None:
    uow = UnitOfWork(sessionmaker)
    async with uow:
        with pytest.raises(RuntimeError, match="already open"):
            async with uow:
                pass
    with pytest.raises(RuntimeError, match="not open"):
        _ = uow.session


async def _fail_before_commit(uow: UnitOfWork) -> None:
    async with uow:
        await uow.session.execute(text("SELECT 1"))
        raise ZeroDivisionError


async def _fail_at_commit(uow: UnitOfWork) -> None:
    async with uow:
        for statement in (
            "CREATE TEMP TABLE once (x int UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP",
            "INSERT INTO once VALUES (1), (1)",
        ):
            await uow.session.execute(text(statement))
        await uow.commit()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_unit_of_work_says_whether_it_may_have_committed(
    sessionmaker: SessionMaker,
) -> None:
    """A failure before the commit leaves nothing; one at the commit may have committed (the
    group commit must not run those joins again one by one), unless it is the database's own
    refusal, as a deferred unique check failing at COMMIT is."""
    uow = UnitOfWork(sessionmaker)
    with pytest.raises(ZeroDivisionError):
        await _fail_before_commit(uow)
    assert not uow.may_have_committed
    with pytest.raises(Exception, match="unique") as refused:
        await _fail_at_commit(uow)
    assert uow.may_have_committed
    # ...but PostgreSQL answered with its refusal: the changes were rolled back for sure.
    assert not commit_outcome_unknown(uow, refused.value)
    assert commit_outcome_unknown(uow, ConnectionResetError("lost mid-COMMIT"))
    async with uow:
        assert not uow.may_have_committed  # each `async with` starts afresh
        await uow.commit()
    assert uow.may_have_committed


async def test_a_deadlock_is_run_again_and_then_answered_busy(postgres_url: str) -> None:
    """Two use cases that lock two rows in opposite orders: PostgreSQL aborts one; @use_case
    runs it again. One that keeps deadlocking ends as ServiceBusy (503), never a 500."""
    from app.db import create_engine, create_sessionmaker

    engine = create_engine(postgres_url, pool_size=4)
    sessionmaker = create_sessionmaker(engine)
    table = f"t_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, n int)"))
        await conn.execute(text(f"INSERT INTO {table} VALUES (1, 0), (2, 0)"))
    runs = {"a": 0, "b": 0}
    both_locked_first = asyncio.Barrier(2)

    @use_case
    async def bump(uow: UnitOfWork, *, name: str, first: int, second: int) -> None:
        runs[name] += 1
        async with uow:
            await uow.session.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = {first}"))
            if runs[name] == 1:
                await both_locked_first.wait()
            await uow.session.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = {second}"))
            await uow.commit()

    try:
        await asyncio.gather(
            bump(UnitOfWork(sessionmaker), name="a", first=1, second=2),
            bump(UnitOfWork(sessionmaker), name="b", first=2, second=1),
        )
        assert sorted(runs.values()) == [1, 2]  # the deadlock victim ran again
        async with engine.connect() as conn:
            total = (await conn.execute(text(f"SELECT sum(n) FROM {table}"))).scalar_one()
        assert total == 4  # both use cases committed exactly once

        attempts = {"n": 0}

        @use_case
        async def always_deadlocks(uow: UnitOfWork) -> None:
            attempts["n"] += 1
            async with uow:
                await uow.session.execute(
                    text("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40P01'; END $$")
                )

        with pytest.raises(ServiceBusy):
            await always_deadlocks(UnitOfWork(sessionmaker, attempts=3))
        assert attempts["n"] == 3
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE {table}"))
        await engine.dispose()


async def test_forty_linked_batches_in_opposite_orders_never_deadlock(
    fresh_pg_sessions: SessionMaker,
) -> None:
    """Each batch moves money around the same four wallets, half of them in reverse order:
    accounts are locked in ascending id order, so all 40 commit and nothing is lost."""
    users = [uuid.uuid4() for _ in range(4)]
    for user in users:
        await fund(fresh_pg_sessions, user, 100_000)

    async def batch(i: int) -> Any:
        ring = users if i % 2 else list(reversed(users))
        specs = [pay(ring[k], ring[(k + 1) % 4], 10 + i) for k in range(4)]
        return await service.post_linked(UnitOfWork(fresh_pg_sessions), specs, now=NOW)

    results = await asyncio.gather(*(batch(i) for i in range(40)))
    assert all(len(posted) == 4 for posted in results)
    async with fresh_pg_sessions() as session:
        balances = [
            (await service.wallet_balance(session, user, "EUR")).balance_minor for user in users
        ]
        report = await verify_ledger(session)
    assert balances == [100_000] * 4  # every ring returns what it moved
    assert report.ok, report.problem

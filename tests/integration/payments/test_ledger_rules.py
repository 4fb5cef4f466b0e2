"""What the ledger rework guarantees: validation before the database, one bad element failing only
itself in a group commit, no account id outliving its database, transfers that must land on the
accounts they name, and withdrawals that only the provider's answer settles."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import SessionMaker, create_engine, create_sessionmaker
from app.migrate import upgrade
from app.uow import UnitOfWork
from payments import ledger, postgres, service
from payments.batcher import batcher_for
from payments.chain_writer import chain_all
from payments.errors import InsufficientFunds, InvalidTransfer, TransferIdConflict
from payments.funding import FundingResult, FundingStatus
from payments.models import AccountKind, TransferKind, TransferStatus
from payments.money import MAX_AMOUNT_MINOR
from payments.records import (
    AccountRef,
    TransferSpec,
    escrow,
    external_funding,
    platform_revenue,
    row_values,
    wallet,
)
from payments.verify import verify_ledger
from tests.support.ledger import COPOOL, NOW, PROVIDER, fund, new_id
from tests.support.services import POSTGRES_ADMIN_DSN


def payment(payer: uuid.UUID, payee: uuid.UUID, amount: int, **changes: Any) -> TransferSpec:
    values: dict[str, Any] = {
        "id": new_id("pay"),
        "debit": wallet(payer, "EUR"),
        "credit": wallet(payee, "EUR"),
        "amount_minor": amount,
        "kind": "payment",
        "ref": "rules",
    }
    return TransferSpec(**(values | changes))


async def balance(sessions: SessionMaker, user: uuid.UUID) -> service.WalletBalance:
    async with sessions() as session:
        return await service.wallet_balance(session, user, "EUR")


async def count_rows(sessions: SessionMaker) -> tuple[int, int]:
    async with sessions() as session:
        transfers = (
            await session.execute(select(func.count()).select_from(ledger.TRANSFERS))
        ).scalar_one()
        accounts = (
            await session.execute(select(func.count()).select_from(ledger.ACCOUNTS))
        ).scalar_one()
    return int(transfers), int(accounts)


@contextmanager
def statements_sent(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the block runs."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


# --- validation: the same on both backends, before any statement ------------------------------

INVALID: dict[str, dict[str, Any]] = {
    "a kind of 33 characters": {"kind": "k" * 33},
    "a ref of 161 characters": {"ref": "r" * 161},
    "an id of 121 characters": {"id": "i" * 121},
    "an empty id": {"id": ""},
    "an amount of 0": {"amount_minor": 0},
    "a negative amount": {"amount_minor": -5},
    "an amount above the maximum": {"amount_minor": MAX_AMOUNT_MINOR + 1},
    "a boolean amount": {"amount_minor": True},
    "an account key of 121 characters": {
        "credit": escrow(AccountKind.POOL_ESCROW, "s" * 120, "EUR")
    },
    "a debit and a credit that are one account": {"credit": None},
}

Entry = Callable[[UnitOfWork, TransferSpec], Awaitable[Any]]


async def through_transfer(uow: UnitOfWork, spec: TransferSpec) -> Any:
    return await service.transfer(uow, spec, now=NOW)


async def through_hold(uow: UnitOfWork, spec: TransferSpec) -> Any:
    return await service.hold(uow, spec, now=NOW)


async def through_linked_batch(uow: UnitOfWork, spec: TransferSpec) -> Any:
    fee = TransferSpec(new_id("fee"), spec.debit, platform_revenue("EUR"), 1, "fee", "rules")
    return await service.post_linked(uow, [fee, spec], now=NOW)  # the bad leg comes second


async def through_ledger_transfer(uow: UnitOfWork, spec: TransferSpec) -> Any:
    async with uow:
        await ledger.transfer(uow.session, spec, now=NOW)
        await uow.commit()


async def through_ledger_hold(uow: UnitOfWork, spec: TransferSpec) -> Any:
    async with uow:
        await ledger.hold(uow.session, spec, now=NOW)
        await uow.commit()


ENTRIES: dict[str, Entry] = {
    "transfer": through_transfer,
    "hold": through_hold,
    "post_linked": through_linked_batch,
    "ledger.transfer": through_ledger_transfer,
    "ledger.hold": through_ledger_hold,
}


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("case", list(INVALID))
async def test_an_invalid_transfer_is_refused_before_the_database_sees_it(
    sessionmaker: SessionMaker, case: str, entry: str
) -> None:
    uow = UnitOfWork(sessionmaker)
    payer, payee = uuid.uuid4(), uuid.uuid4()
    changes = dict(INVALID[case])
    if changes.get("credit", "") is None:
        changes["credit"] = wallet(payer, "EUR")
    spec = payment(payer, payee, 10, **changes)
    before = await count_rows(sessionmaker)
    with statements_sent(uow.engine) as sent, pytest.raises(InvalidTransfer):
        await ENTRIES[entry](uow, spec)
    assert sent == []  # refused in Python: no statement, no transaction, no account opened
    assert await count_rows(sessionmaker) == before


async def test_the_longest_valid_fields_are_accepted_on_both_backends(
    sessionmaker: SessionMaker,
) -> None:
    payer, payee = uuid.uuid4(), uuid.uuid4()
    uow = UnitOfWork(sessionmaker)
    await fund(uow, payer, MAX_AMOUNT_MINOR)
    spec = payment(payer, payee, MAX_AMOUNT_MINOR, id="i" * 110 + new_id("")[:10])
    spec = TransferSpec(spec.id, spec.debit, spec.credit, spec.amount_minor, "k" * 32, "r" * 160)
    posted = await service.transfer(uow, spec, now=NOW)
    assert (len(posted.id), len(posted.kind), len(posted.ref)) == (120, 32, 160)
    assert (await balance(sessionmaker, payee)).balance_minor == MAX_AMOUNT_MINOR


# --- group commit: one bad element fails only itself ------------------------------------------


@pytest.fixture
async def pg_sessions(postgres_url: str) -> Any:
    engine = create_engine(postgres_url, pool_size=20)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def test_one_bad_transfer_in_a_group_commit_fails_only_itself(
    pg_sessions: SessionMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    payers = [uuid.uuid4() for _ in range(30)]
    payee = uuid.uuid4()
    uow = UnitOfWork(pg_sessions)
    for payer in payers:
        await fund(uow, payer, 100)
    async with uow:  # every account exists before: the calls go in one batch
        await ledger.open_accounts(uow.session, [wallet(payee, "EUR")], NOW)
        await uow.commit()
    taken = await service.transfer(uow, payment(payers[0], payee, 1), now=NOW)

    batcher = batcher_for(uow.engine, postgres.STAGE_BATCH)
    batches: list[list[str]] = []
    execute = batcher._execute

    async def spy(batch: list[dict[str, Any]]) -> Any:
        batches.append([values["id"] for values in batch])
        return await execute(batch)

    monkeypatch.setattr(batcher, "_execute", spy)

    specs = [payment(payer, payee, 10) for payer in payers]
    specs[7] = payment(payers[7], payee, 101)  # more than the payer has
    specs[13] = payment(payers[13], payee, 10, id=taken.id)  # an id used for another transfer
    specs[21] = payment(payers[21], payee, 10, kind="k" * 33)  # what no column could hold

    async def attempt(spec: TransferSpec) -> str:
        try:
            await service.transfer(UnitOfWork(pg_sessions), spec, now=NOW)
        except InsufficientFunds:
            return "insufficient"
        except TransferIdConflict:
            return "conflict"
        except InvalidTransfer:
            return "invalid"
        return "ok"

    outcomes = await asyncio.gather(*(attempt(spec) for spec in specs))
    assert outcomes[7] == "insufficient"
    assert outcomes[13] == "conflict"
    assert outcomes[21] == "invalid"
    assert outcomes.count("ok") == 27
    together = max(batches, key=len)  # they really shared a statement
    assert {specs[7].id, specs[13].id, specs[0].id} <= set(together)
    assert specs[21].id not in {i for batch in batches for i in batch}
    assert (await balance(pg_sessions, payee)).balance_minor == 1 + 27 * 10
    assert (await balance(pg_sessions, payers[7])).balance_minor == 100
    assert (await balance(pg_sessions, payers[13])).balance_minor == 100
    assert (await balance(pg_sessions, payers[21])).balance_minor == 100


async def test_a_batch_statement_that_fails_is_answered_element_by_element(
    pg_sessions: SessionMaker,
) -> None:
    """Should an element the validation let through break the whole statement, the others still
    go through, each on its own, and only that element fails."""
    payers = [uuid.uuid4() for _ in range(5)]
    payee = uuid.uuid4()
    uow = UnitOfWork(pg_sessions)
    for payer in payers:
        await fund(uow, payer, 100)
    async with uow:
        await ledger.open_accounts(uow.session, [wallet(payee, "EUR")], NOW)
        await uow.commit()
    rows = [row_values(payment(payer, payee, 10), is_hold=False, now=NOW) for payer in payers]
    rows[2]["kind"] = "k" * 40  # bypasses validate(): the column refuses it
    batcher = batcher_for(uow.engine, postgres.STAGE_BATCH)
    answers = await asyncio.gather(*(batcher.submit(row) for row in rows), return_exceptions=True)
    assert isinstance(answers[2], Exception)
    assert [a[0] for i, a in enumerate(answers) if i != 2] == ["ok"] * 4  # type: ignore[index]
    assert (await balance(pg_sessions, payee)).balance_minor == 40
    assert (await balance(pg_sessions, payers[2])).balance_minor == 100


# --- no account id outlives the database it came from -----------------------------------------


def delete_sqlite_database(url: str) -> None:
    path = make_url(url).database
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def recreate_database(url: str, engine: AsyncEngine) -> None:
    """Drop the database at this URL and make a new, migrated one at the same URL."""
    await engine.dispose()  # the engine stays; its pooled connections go
    if url.startswith("sqlite"):
        delete_sqlite_database(url)
    else:
        name = str(make_url(url).database)
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=3)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
    await upgrade(engine)


async def open_in_order(sessions: SessionMaker, refs: list[AccountRef]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for ref in refs:  # one at a time, so the ids follow this order
        async with sessions() as session:
            ids |= await ledger.open_accounts(session, [ref], NOW)
            await session.commit()
    return ids


async def test_account_ids_are_never_remembered_past_their_database(
    fresh_database_url: str,
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    source = external_funding(PROVIDER, "EUR")
    engine = create_engine(fresh_database_url)
    sessions = create_sessionmaker(engine)
    try:
        first = await open_in_order(sessions, [source, wallet(alice, "EUR"), wallet(bob, "EUR")])
        await fund(sessions, alice, 100)
        await fund(sessions, bob, 1)
        async with sessions() as session:  # and once more inside a caller's transaction
            await ledger.transfer(session, payment(alice, bob, 1), now=NOW)
            await session.commit()

        await recreate_database(fresh_database_url, engine)
        second = await open_in_order(sessions, [source, wallet(bob, "EUR"), wallet(alice, "EUR")])
        assert second[wallet(alice, "EUR").key] == first[wallet(bob, "EUR").key]  # ids swapped

        await fund(sessions, alice, 70)  # a use case of its own (group commit on PostgreSQL)
        uow = UnitOfWork(sessions)
        async with uow:  # and the primitives inside a caller's unit of work
            await ledger.transfer(
                uow.session,
                TransferSpec(new_id(), source, wallet(alice, "EUR"), 5, "top_up", "rules"),
                now=NOW,
            )
            await uow.commit()
        assert (await balance(sessions, alice)).balance_minor == 75
        assert (await balance(sessions, bob)).balance_minor == 0
        await chain_all(sessions)
        async with sessions() as session:
            report = await verify_ledger(session)
        assert report.ok, report.problem
    finally:
        await engine.dispose()


# --- verify proves every transfer landed on the accounts it names -----------------------------


async def test_verify_finds_a_transfer_moved_to_another_account_with_balances_to_match(
    fresh_database_url: str, fresh_engine: AsyncEngine
) -> None:
    """Even when the forger fixes the balances and rebuilds the whole chain, the transfer names
    the accounts it was meant for, and `copool ledger verify` says it landed elsewhere."""
    sessions = create_sessionmaker(fresh_engine)
    alice, mallory, payee = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await fund(sessions, alice, 100)
    await fund(sessions, mallory, 100)
    paid = await service.transfer(
        UnitOfWork(sessions), payment(alice, payee, 30, id="tampered"), now=NOW
    )
    await chain_all(sessions)
    async with sessions() as session:
        assert (await verify_ledger(session)).ok

    async with fresh_engine.begin() as conn:  # make mallory pay instead of alice, consistently
        mallory_id = (
            await conn.execute(
                text("SELECT id FROM ledger_accounts WHERE key = :key"),
                {"key": wallet(mallory, "EUR").key},
            )
        ).scalar_one()
        await conn.execute(
            text("UPDATE ledger_transfers SET debit_account_id = :m WHERE id = 'tampered'"),
            {"m": mallory_id},
        )
        for account_id, delta in ((paid.debit_account_id, -30), (mallory_id, 30)):
            await conn.execute(
                text("UPDATE ledger_accounts SET debits_posted = debits_posted + :d WHERE id = :a"),
                {"d": delta, "a": account_id},
            )
        await conn.execute(text("UPDATE ledger_transfers SET seq = NULL, hash = NULL"))
        await conn.execute(text(f"UPDATE ledger_chain_head SET seq = 0, hash = '{'0' * 64}'"))
    await chain_all(sessions)  # the forged history, freshly chained

    async with sessions() as session:
        report = await verify_ledger(session)
    assert not report.ok
    assert report.problem is not None
    assert report.problem.startswith("transfer tampered:")
    assert wallet(mallory, "EUR").key in report.problem
    assert (await balance(sessions, alice)).balance_minor == 100  # what the forger wanted
    env = {**os.environ, "COPOOL_DATABASE_URL": fresh_database_url}
    cli = await asyncio.to_thread(
        subprocess.run, [COPOOL, "ledger", "verify"], env=env, capture_output=True, text=True
    )
    assert cli.returncode == 1
    assert "transfer tampered" in cli.stderr


async def test_verify_finds_a_capture_moved_to_another_account_than_its_hold(
    fresh_engine: AsyncEngine,
) -> None:
    sessions = create_sessionmaker(fresh_engine)
    uow, user, other = UnitOfWork(sessions), uuid.uuid4(), uuid.uuid4()
    await fund(uow, user, 100)
    await fund(uow, other, 1)
    fare = escrow(AccountKind.RIDE_ESCROW, uuid.uuid4(), "EUR")
    held = await service.hold(
        uow, TransferSpec(new_id("hold"), wallet(user, "EUR"), fare, 40, "fare", "r"), now=NOW
    )
    captured = await service.capture(uow, hold_id=held.id, amount_minor=40, now=NOW)
    async with fresh_engine.begin() as conn:  # the capture pays the other wallet instead
        other_id = (
            await conn.execute(
                text("SELECT id FROM ledger_accounts WHERE key = :key"),
                {"key": wallet(other, "EUR").key},
            )
        ).scalar_one()
        await conn.execute(
            text("UPDATE ledger_transfers SET credit_account_id = :o WHERE id = :id"),
            {"o": other_id, "id": captured.id},
        )
        for account_id, delta in ((held.credit_account_id, -40), (other_id, 40)):
            await conn.execute(
                text(
                    "UPDATE ledger_accounts SET credits_posted = credits_posted + :d WHERE id = :a"
                ),
                {"d": delta, "a": account_id},
            )
    await chain_all(sessions)
    async with sessions() as session:
        report = await verify_ledger(session)
    assert not report.ok
    assert report.problem == (
        f"transfer {captured.id}: its accounts are not those of the transfer it resolves"
    )


# --- withdrawals: only the provider's answer settles them -------------------------------------


class SlowBank:
    """A provider whose payouts stay undecided until told otherwise."""

    name = "slowbank"

    def __init__(self) -> None:
        self.decided: FundingStatus = FundingStatus.UNKNOWN

    async def top_up(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        return FundingResult(FundingStatus.SUCCEEDED, f"in:{reference}")

    async def withdraw(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        return FundingResult(FundingStatus.UNKNOWN, f"out:{reference}")

    async def status(self, *, reference: str) -> FundingResult:
        return FundingResult(self.decided, f"out:{reference}")


async def test_the_expiry_sweep_leaves_withdrawal_holds_to_the_provider(
    sessionmaker: SessionMaker,
) -> None:
    uow, user, bank = UnitOfWork(sessionmaker), uuid.uuid4(), SlowBank()
    await fund(uow, user, 1_000)
    withdrawal = await service.withdraw(
        uow,
        provider=bank,
        user_id=user,
        amount_minor=400,
        currency="EUR",
        transfer_id=new_id("withdraw"),
        hold_ttl=timedelta(minutes=5),
        now=NOW,
    )
    pool_hold = await service.hold(
        uow,
        TransferSpec(
            new_id("hold"),
            wallet(user, "EUR"),
            escrow(AccountKind.POOL_ESCROW, uuid.uuid4(), "EUR"),
            100,
            "pool_join",
            "r",
            expires_at=NOW + timedelta(minutes=5),
        ),
        now=NOW,
    )
    assert (withdrawal.kind, withdrawal.status) == (TransferKind.WITHDRAWAL, "pending")

    assert await service.expire_due_holds(uow, now=NOW + timedelta(minutes=10)) >= 1
    async with sessionmaker() as session:
        still = await ledger.get_transfer(session, withdrawal.id)
        swept = await ledger.get_transfer(session, pool_hold.id)
    assert still is not None
    assert swept is not None
    assert still.status is TransferStatus.PENDING  # the provider may still pay it out
    assert swept.status is TransferStatus.EXPIRED
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 600, 400, 1_000)


async def test_a_withdrawal_the_provider_confirms_after_its_ttl_is_still_settled(
    sessionmaker: SessionMaker,
) -> None:
    uow, user, bank = UnitOfWork(sessionmaker), uuid.uuid4(), SlowBank()
    await fund(uow, user, 1_000)
    withdrawal = await service.withdraw(
        uow,
        provider=bank,
        user_id=user,
        amount_minor=400,
        currency="EUR",
        transfer_id=new_id("withdraw"),
        hold_ttl=timedelta(minutes=5),
        now=NOW,
    )
    later = NOW + timedelta(minutes=10)
    await service.expire_due_holds(uow, now=later)
    bank.decided = FundingStatus.SUCCEEDED  # the bank paid it out after all
    assert await service.settle_withdrawals(uow, provider=bank, now=later) >= 1
    async with sessionmaker() as session:
        settled = await ledger.get_transfer(session, withdrawal.id)
        paid = await ledger.get_transfer(session, f"{withdrawal.id}:paid-late")
    # The expired hold cannot be captured: it is released and the payout posted in its place.
    assert settled is not None
    assert settled.status is TransferStatus.VOIDED
    assert paid is not None
    assert (paid.status, paid.amount_minor) == (TransferStatus.POSTED, 400)
    assert await balance(sessionmaker, user) == service.WalletBalance("EUR", 600, 0, 600)
    assert await service.settle_withdrawals(uow, provider=bank, now=later) == 0  # nothing left

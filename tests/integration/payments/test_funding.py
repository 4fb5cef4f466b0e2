"""Withdrawals through a provider whose answers come late: the hold waits with an expiry, the job
asks the provider until it decides, and no database lock is held while the provider is asked."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta

import pytest

from app.db import SessionMaker
from app.settings import SettingsError, load_settings
from app.uow import UnitOfWork
from payments import jobs, ledger, service
from payments.errors import PaymentDeclined
from payments.funding import FundingResult, FundingStatus
from payments.models import TransferStatus
from tests.support.ledger import NOW, fund, new_id


class LateBank:
    """Payouts stay undecided until the test decides them; remembers what it was asked."""

    name = "latebank"

    def __init__(self) -> None:
        self.decided = FundingStatus.UNKNOWN
        self.asked: list[str] = []
        self.during_call: list[str] = []  # what the test observed while the provider ran

    async def top_up(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        return FundingResult(FundingStatus.SUCCEEDED, f"in:{reference}")

    async def withdraw(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        return FundingResult(FundingStatus.UNKNOWN, f"out:{reference}")

    async def status(self, *, reference: str) -> FundingResult:
        self.asked.append(reference)
        return FundingResult(self.decided, f"out:{reference}", reason="closed_account")


async def withdraw(uow: UnitOfWork, bank: LateBank, user: uuid.UUID, amount: int) -> str:
    held = await service.withdraw(
        uow,
        provider=bank,
        user_id=user,
        amount_minor=amount,
        currency="EUR",
        transfer_id=new_id("withdrawal"),
        hold_ttl=timedelta(hours=1),
        now=NOW,
    )
    assert held.status is TransferStatus.PENDING  # the provider's answer is not known yet
    assert held.expires_at == NOW + timedelta(hours=1)  # but the hold does not wait forever
    return held.id


async def wallet(sessionmaker: SessionMaker, user: uuid.UUID) -> service.WalletBalance:
    async with sessionmaker() as session:
        return await service.wallet_balance(session, user, "EUR")


@pytest.mark.parametrize("decision", [FundingStatus.SUCCEEDED, FundingStatus.DECLINED])
async def test_the_job_asks_the_provider_until_it_decides(
    sessionmaker: SessionMaker, decision: FundingStatus
) -> None:
    bank, user = LateBank(), uuid.uuid4()
    await fund(sessionmaker, user, 1_000)
    hold_id = await withdraw(UnitOfWork(sessionmaker), bank, user, 300)
    ctx = {"sessionmaker": sessionmaker, "clock": lambda: NOW + timedelta(minutes=15)}

    assert await jobs.settle_withdrawals({**ctx, "funding": bank}) == 0  # still unknown
    assert hold_id in bank.asked
    assert await wallet(sessionmaker, user) == service.WalletBalance("EUR", 700, 300, 1_000)

    bank.decided = decision
    assert await jobs.settle_withdrawals({**ctx, "funding": bank}) == 1
    async with sessionmaker() as session:
        settled = await ledger.get_transfer(session, hold_id)
    assert settled is not None
    if decision is FundingStatus.SUCCEEDED:
        assert settled.status is TransferStatus.POSTED
        assert await wallet(sessionmaker, user) == service.WalletBalance("EUR", 700, 0, 700)
    else:
        assert settled.status is TransferStatus.VOIDED
        assert await wallet(sessionmaker, user) == service.WalletBalance("EUR", 1_000, 0, 1_000)
    assert await jobs.settle_withdrawals({**ctx, "funding": bank}) == 0  # nothing left to ask


async def test_undecided_withdrawals_do_not_hide_the_rest(sessionmaker: SessionMaker) -> None:
    """A page's worth of withdrawals the provider has not decided does not starve the ones after
    it: one sweep asks about every withdrawal, a page at a time."""

    class SlowBank(LateBank):
        undecided: set[str] = set()

        async def status(self, *, reference: str) -> FundingResult:
            self.asked.append(reference)
            if reference in self.undecided:
                return FundingResult(FundingStatus.UNKNOWN, f"out:{reference}")
            return FundingResult(FundingStatus.SUCCEEDED, f"out:{reference}")

    bank, user = SlowBank(), uuid.uuid4()
    bank.name = f"slowbank-{user.hex[:12]}"  # its own withdrawals only, whatever tests left
    await fund(sessionmaker, user, 1_000)
    uow = UnitOfWork(sessionmaker)
    held = [await withdraw(uow, bank, user, 100) for _ in range(5)]
    bank.undecided = set(held[:3])  # the oldest three, more than a page
    later = NOW + timedelta(minutes=15)

    assert await service.settle_withdrawals(uow, provider=bank, now=later, limit=2) == 2
    assert sorted(bank.asked) == sorted(held)  # each asked once
    assert await wallet(sessionmaker, user) == service.WalletBalance("EUR", 500, 300, 800)


async def test_a_sweep_out_of_time_leaves_the_rest_to_the_next_one(
    sessionmaker: SessionMaker,
) -> None:
    """A slow provider spends a sweep's budget: the next sweep goes on after the last one asked,
    not at the oldest again, and starts over once every withdrawal was asked."""
    bank, user = LateBank(), uuid.uuid4()
    bank.name = f"latebank-{user.hex[:12]}"  # its own withdrawals only, whatever tests left
    await fund(sessionmaker, user, 1_000)
    uow = UnitOfWork(sessionmaker)
    held = [await withdraw(uow, bank, user, 100) for _ in range(3)]
    place, later = service.SweepPlace(), NOW + timedelta(minutes=15)
    for _ in range(5):  # a budget of nothing: one withdrawal asked a sweep
        await service.settle_withdrawals(uow, provider=bank, now=later, place=place, budget_s=0)
    # The fourth found none after the last and left the fifth to start at the oldest again.
    assert bank.asked == [*held, held[0]]
    bank.decided = FundingStatus.SUCCEEDED
    assert await service.settle_withdrawals(uow, provider=bank, now=later, place=place) == 2
    assert place.after is None  # every one asked: the next sweep starts at the oldest


async def test_no_write_lock_is_held_while_the_provider_is_asked(tmp_path: object) -> None:
    """On SQLite another writer gets the database while a withdrawal waits for its provider."""
    from app.db import create_engine, create_sessionmaker
    from tests.support.services import migrate, sqlite_url

    url = sqlite_url(str(tmp_path))
    await migrate(url)
    engine = create_engine(url)
    sessionmaker = create_sessionmaker(engine)
    path = url.split("///", 1)[1]

    class WatchingBank(LateBank):
        async def top_up(
            self, *, reference: str, amount_minor: int, currency: str
        ) -> FundingResult:
            self.try_to_write()
            return FundingResult(FundingStatus.SUCCEEDED, f"in:{reference}")

        async def withdraw(
            self, *, reference: str, amount_minor: int, currency: str
        ) -> FundingResult:
            self.try_to_write()
            return FundingResult(FundingStatus.SUCCEEDED, f"out:{reference}")

        def try_to_write(self) -> None:
            other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # fails at once if a writer holds the lock
                other.execute("ROLLBACK")
                self.during_call.append("another writer got in")
            except sqlite3.OperationalError as exc:
                self.during_call.append(f"locked: {exc}")
            finally:
                other.close()

    try:
        bank, user = WatchingBank(), uuid.uuid4()
        await service.top_up(
            UnitOfWork(sessionmaker),
            provider=bank,
            user_id=user,
            amount_minor=1_000,
            currency="EUR",
            transfer_id=new_id("top-up"),
            now=NOW,
        )
        paid = await service.withdraw(
            UnitOfWork(sessionmaker),
            provider=bank,
            user_id=user,
            amount_minor=250,
            currency="EUR",
            transfer_id=new_id("withdrawal"),
            hold_ttl=timedelta(hours=1),
            now=NOW,
        )
        assert paid.status is TransferStatus.POSTED
        assert bank.during_call == ["another writer got in"] * 2
    finally:
        await engine.dispose()


async def test_a_declined_withdrawal_releases_its_hold(sessionmaker: SessionMaker) -> None:
    class NoBank(LateBank):
        async def withdraw(
            self, *, reference: str, amount_minor: int, currency: str
        ) -> FundingResult:
            return FundingResult(FundingStatus.DECLINED, "", reason="closed_account")

    user = uuid.uuid4()
    await fund(sessionmaker, user, 1_000)
    with pytest.raises(PaymentDeclined, match="closed_account"):
        await service.withdraw(
            UnitOfWork(sessionmaker),
            provider=NoBank(),
            user_id=user,
            amount_minor=400,
            currency="EUR",
            transfer_id=new_id("withdrawal"),
            hold_ttl=timedelta(hours=1),
            now=NOW,
        )
    assert await wallet(sessionmaker, user) == service.WalletBalance("EUR", 1_000, 0, 1_000)


def test_the_sandbox_is_refused_in_prod_unless_named() -> None:
    prod = {"COPOOL_ENV": "prod", "COPOOL_SECRET_KEY": "s" * 40}
    with pytest.raises(SettingsError, match="COPOOL_FUNDING_PROVIDER"):
        load_settings(prod)
    assert load_settings({**prod, "COPOOL_FUNDING_PROVIDER": "sandbox"}).funding_provider == (
        "sandbox"
    )
    with pytest.raises(SettingsError, match="COPOOL_FUNDING_PROVIDER"):
        load_settings({**prod, "COPOOL_FUNDING_PROVIDER": "paypal-ish"})


async def test_a_provider_that_never_answers_is_unknown_not_a_hang(
    sessionmaker: SessionMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from payments.errors import FundingUnconfirmed

    class SilentBank(LateBank):
        async def top_up(
            self, *, reference: str, amount_minor: int, currency: str
        ) -> FundingResult:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        async def withdraw(
            self, *, reference: str, amount_minor: int, currency: str
        ) -> FundingResult:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    monkeypatch.setattr(service, "PROVIDER_TIMEOUT_S", 0.05)
    bank, user, uow = SilentBank(), uuid.uuid4(), UnitOfWork(sessionmaker)
    with pytest.raises(FundingUnconfirmed):
        await service.top_up(
            uow, provider=bank, user_id=user, amount_minor=100, currency="EUR",
            transfer_id=new_id("top-up"), now=NOW,
        )  # fmt: skip
    await fund(sessionmaker, user, 1_000)
    await withdraw(uow, bank, user, 300)  # answered as a pending hold, left to the job
    assert await wallet(sessionmaker, user) == service.WalletBalance("EUR", 700, 300, 1_000)

"""The ledger against a tiny in-memory model: random operations on PostgreSQL, invariants after
every step (hypothesis RuleBasedStateMachine)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select

from app.db import create_engine, create_sessionmaker
from payments import service
from payments.errors import HoldExpired, HoldNotPending, InsufficientFunds, RefundExceedsCaptured
from payments.models import Account, AccountKind
from tests.support.ledger import NOW, new_id

T = TypeVar("T")
USERS = 3


@dataclass
class ModelHold:
    id: str
    user: int
    amount: int
    expires_at: Any
    state: str = "pending"


@dataclass
class ModelPayment:
    spec: service.TransferSpec
    payer: int
    payee: int
    refunded: int = 0


class LedgerMachine(RuleBasedStateMachine):
    database_url: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(self.database_url, pool_size=2)
        self.sessions = create_sessionmaker(self.engine)
        self.now = NOW
        self.users = [uuid.uuid4() for _ in range(USERS)]
        self.escrow = service.escrow(AccountKind.POOL_ESCROW, uuid.uuid4(), "EUR")
        self.posted = [0] * USERS  # credits_posted - debits_posted of each wallet
        self.held = [0] * USERS  # debits_pending of each wallet
        self.holds: list[ModelHold] = []
        self.payments: list[ModelPayment] = []

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    async def _call(self, fn: Any, **kwargs: Any) -> Any:
        async with self.sessions() as session:
            return await fn(session, now=self.now, **kwargs)

    def available(self, user: int) -> int:
        return self.posted[user] - self.held[user]

    def teardown(self) -> None:
        self.run(self.engine.dispose())
        self.loop.close()

    @rule(user=st.integers(0, USERS - 1), amount=st.integers(1, 5_000))
    def top_up(self, user: int, amount: int) -> None:
        spec = service.TransferSpec(
            new_id("fund"),
            service.external_funding("model", "EUR"),
            service.wallet(self.users[user], "EUR"),
            amount,
            "top_up",
            "model",
        )
        self.run(self._call(service.transfer, spec=spec))
        self.posted[user] += amount

    @rule(
        payer=st.integers(0, USERS - 1),
        payee=st.integers(0, USERS - 1),
        amount=st.integers(1, 3_000),
    )
    def pay(self, payer: int, payee: int, amount: int) -> None:
        if payer == payee:
            return
        spec = service.TransferSpec(
            new_id("pay"),
            service.wallet(self.users[payer], "EUR"),
            service.wallet(self.users[payee], "EUR"),
            amount,
            "payment",
            "model",
        )
        try:
            self.run(self._call(service.transfer, spec=spec))
        except InsufficientFunds:
            assert amount > self.available(payer)
            return
        assert amount <= self.available(payer)
        self.posted[payer] -= amount
        self.posted[payee] += amount
        self.payments.append(ModelPayment(spec, payer, payee))

    @rule(user=st.integers(0, USERS - 1), amount=st.integers(1, 3_000), ttl=st.integers(1, 60))
    def hold(self, user: int, amount: int, ttl: int) -> None:
        spec = service.TransferSpec(
            new_id("hold"),
            service.wallet(self.users[user], "EUR"),
            self.escrow,
            amount,
            "pool_join",
            "model",
            expires_at=self.now + timedelta(minutes=ttl),
        )
        try:
            self.run(self._call(service.hold, spec=spec))
        except InsufficientFunds:
            assert amount > self.available(user)
            return
        assert amount <= self.available(user)
        self.held[user] += amount
        self.holds.append(ModelHold(spec.id, user, amount, spec.expires_at))

    @rule(data=st.data(), share=st.floats(0.01, 1.0))
    def capture(self, data: st.DataObject, share: float) -> None:
        if not self.holds:
            return
        hold = data.draw(st.sampled_from(self.holds))
        amount = max(1, int(hold.amount * share))
        try:
            self.run(self._call(service.capture, hold_id=hold.id, amount_minor=amount))
        except HoldExpired:
            assert hold.state == "pending"
            assert hold.expires_at <= self.now
            return
        except HoldNotPending:
            assert hold.state != "pending"
            return
        assert hold.state == "pending"
        hold.state = "posted"
        self.held[hold.user] -= hold.amount
        self.posted[hold.user] -= amount

    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        if not self.holds:
            return
        hold = data.draw(st.sampled_from(self.holds))
        try:
            self.run(self._call(service.void, hold_id=hold.id))
        except HoldNotPending:
            assert hold.state not in {"pending", "voided"}
            return
        if hold.state == "pending":
            hold.state = "voided"
            self.held[hold.user] -= hold.amount
        else:
            assert hold.state == "voided"  # a replay of the same void

    @rule(data=st.data(), amount=st.integers(1, 3_000))
    def refund(self, data: st.DataObject, amount: int) -> None:
        if not self.payments:
            return
        payment = data.draw(st.sampled_from(self.payments))
        try:
            self.run(
                self._call(
                    service.refund,
                    transfer_id=payment.spec.id,
                    refund_id=new_id("refund"),
                    amount_minor=amount,
                )
            )
        except RefundExceedsCaptured:
            assert payment.refunded + amount > payment.spec.amount_minor
            return
        except InsufficientFunds:
            assert amount > self.available(payment.payee)
            return
        except service.InvalidAmount:
            assert amount > payment.spec.amount_minor
            return
        assert payment.refunded + amount <= payment.spec.amount_minor
        payment.refunded += amount
        self.posted[payment.payee] -= amount
        self.posted[payment.payer] += amount

    @rule(data=st.data())
    def retry_a_payment(self, data: st.DataObject) -> None:
        if not self.payments:
            return
        payment = data.draw(st.sampled_from(self.payments))
        self.run(self._call(service.transfer, spec=payment.spec))  # moves nothing

    @rule(minutes=st.integers(1, 90))
    def time_passes_and_the_sweep_runs(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        self.run(self._call(service.expire_due_holds))
        for hold in self.holds:
            if hold.state == "pending" and hold.expires_at <= self.now:
                hold.state = "expired"
                self.held[hold.user] -= hold.amount

    @invariant()
    def wallets_match_the_model(self) -> None:
        for index, user in enumerate(self.users):
            balance = self.run(self._wallet(user))
            assert (balance.balance_minor, balance.held_minor) == (
                self.posted[index],
                self.held[index],
            )
            assert balance.available_minor >= 0

    async def _wallet(self, user: uuid.UUID) -> service.WalletBalance:
        async with self.sessions() as session:
            return await service.wallet_balance(session, user, "EUR")

    @invariant()
    def the_ledger_balances_replays_and_verifies(self) -> None:
        report, sums = self.run(self._verify())
        debits_pending, credits_pending, posted_sum, negative = sums
        assert posted_sum == 0  # every movement debits one account and credits another
        assert debits_pending == credits_pending
        assert negative == 0  # no limited account below zero, counting pending debits
        assert report.ok, report.problem  # replayed balances == stored, chain verifies
        assert report.unchained == 0

    @invariant()
    def each_hold_is_posted_plus_released_exactly_once(self) -> None:
        for held, status, resolutions in self.run(self._holds()):
            if status == "pending":
                assert resolutions == []
                continue
            [(kind, amount)] = resolutions  # resolved exactly once
            posted = amount if kind == "capture" else 0
            released = held - posted
            assert {"posted": "capture", "voided": "void", "expired": "expiry"}[status] == kind
            assert 0 <= released <= held
            assert posted + released == held
            if kind != "capture":
                assert amount == held

    async def _holds(self) -> list[tuple[int, str, list[tuple[str, int]]]]:
        ids = [hold.id for hold in self.holds]
        if not ids:
            return []
        t = service.TRANSFERS
        async with self.sessions() as session:
            rows = (
                await session.exec(
                    select(t.c.id, t.c.amount_minor, t.c.status).where(t.c.id.in_(ids))
                )
            ).all()
            children = (
                await session.exec(
                    select(t.c.parent_id, t.c.kind, t.c.amount_minor).where(t.c.parent_id.in_(ids))
                )
            ).all()
        return [
            (amount, status, [(k, a) for parent, k, a in children if parent == hold_id])
            for hold_id, amount, status in rows
        ]

    async def _verify(self) -> tuple[service.VerifyReport, tuple[int, int, int, int]]:
        async with self.sessions() as session:
            await service.chain_all(session)
            report = await service.verify_ledger(session)
            c = Account
            row = (
                await session.exec(
                    select(
                        func.coalesce(func.sum(c.debits_pending), 0),
                        func.coalesce(func.sum(c.credits_pending), 0),
                        func.coalesce(func.sum(c.credits_posted - c.debits_posted), 0),
                        func.count().filter(
                            c.debits_must_not_exceed_credits,
                            c.credits_posted - c.debits_posted - c.debits_pending < 0,
                        ),
                    ).where(c.currency == "EUR")
                )
            ).one()
            return report, (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def test_the_ledger_behaves_like_its_model(fresh_postgres_url: str) -> None:
    LedgerMachine.database_url = fresh_postgres_url
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

"""The ledger against a tiny in-memory model: random operations on SQLite and PostgreSQL,
invariants after every step (hypothesis RuleBasedStateMachine).

Operations go through the standalone use cases (payments/service.py) and through the
in-transaction primitives (payments/ledger.py) inside a caller's UnitOfWork. Resolving a hold a
second time follows payments/ledger.py `explain_unclaimed`: a retried capture of the same amount
and a retried void are replays (they answer the first resolution and move nothing); any other
second resolution is refused with HoldNotPending.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select

from app.db import create_engine, create_sessionmaker
from app.uow import UnitOfWork
from payments import ledger, service
from payments.chain_writer import chain_all
from payments.errors import (
    HoldExpired,
    HoldNotPending,
    InsufficientFunds,
    InvalidTransfer,
    RefundExceedsCaptured,
)
from payments.models import AccountKind
from payments.records import TransferRecord, TransferSpec, escrow, external_funding, wallet
from payments.verify import VerifyReport, verify_ledger
from tests.support.ledger import NOW, new_id

T = TypeVar("T")
USERS = 3
#: Modest on purpose: the file runs on both backends in well under 40 s. The CI profile
#: (tests/conftest.py) decides derandomization; these settings inherit it.
#: `make fuzz` (a profile with more examples) runs a tenth of its examples here, longer ones.
LONG_RUN = settings.default.max_examples > 100
MODEL_SETTINGS = settings(
    max_examples=settings.default.max_examples // 10 if LONG_RUN else 12,
    stateful_step_count=settings.default.stateful_step_count if LONG_RUN else 25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class UseCaseAbandoned(Exception):
    """A use case that fails after its ledger calls, before it commits."""


@dataclass
class ModelHold:
    id: str
    user: int
    amount: int
    expires_at: datetime
    state: str = "pending"
    resolution: TransferRecord | None = None  # the capture or void that resolved it


@dataclass
class ModelPayment:
    spec: TransferSpec
    payer: int
    payee: int
    row_id: int
    refunded: int = 0


users = st.integers(0, USERS - 1)


class LedgerMachine(RuleBasedStateMachine):
    database_url: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(self.database_url, pool_size=2)
        self.sessions = create_sessionmaker(self.engine)
        self.uow = UnitOfWork(self.sessions)
        self.now = NOW
        self.users = [uuid.uuid4() for _ in range(USERS)]
        self.escrow = escrow(AccountKind.POOL_ESCROW, uuid.uuid4(), "EUR")
        self.posted = [0] * USERS  # credits_posted - debits_posted of each wallet
        self.held = [0] * USERS  # debits_pending of each wallet
        self.holds: list[ModelHold] = []
        self.payments: list[ModelPayment] = []

    def run(self, coroutine: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def available(self, user: int) -> int:
        return self.posted[user] - self.held[user]

    def teardown(self) -> None:
        self.run(self.engine.dispose())
        self.loop.close()

    def wallet(self, user: int) -> Any:
        return wallet(self.users[user], "EUR")

    def payment_spec(self, payer: int, payee: int, amount: int) -> TransferSpec:
        return TransferSpec(
            new_id("pay"), self.wallet(payer), self.wallet(payee), amount, "payment", "model"
        )

    def hold_spec(self, user: int, amount: int, ttl_minutes: int) -> TransferSpec:
        return TransferSpec(
            new_id("hold"),
            self.wallet(user),
            self.escrow,
            amount,
            "pool_join",
            "model",
            expires_at=self.now + timedelta(minutes=ttl_minutes),
        )

    def held_in_model(self, spec: TransferSpec, user: int) -> None:
        assert spec.expires_at is not None
        self.held[user] += spec.amount_minor
        self.holds.append(ModelHold(spec.id, user, spec.amount_minor, spec.expires_at))

    def paid_in_model(self, spec: TransferSpec, payer: int, payee: int, row_id: int) -> None:
        self.posted[payer] -= spec.amount_minor
        self.posted[payee] += spec.amount_minor
        self.payments.append(ModelPayment(spec, payer, payee, row_id))

    # --- standalone use cases -----------------------------------------------------------------

    @rule(user=users, amount=st.integers(1, 5_000))
    def top_up(self, user: int, amount: int) -> None:
        spec = TransferSpec(
            new_id("fund"),
            external_funding("model", "EUR"),
            self.wallet(user),
            amount,
            "top_up",
            "model",
        )
        self.run(service.transfer(self.uow, spec, now=self.now))
        self.posted[user] += amount

    @rule(payer=users, payee=users, amount=st.integers(1, 3_000))
    def pay(self, payer: int, payee: int, amount: int) -> None:
        if payer == payee:
            return
        spec = self.payment_spec(payer, payee, amount)
        try:
            paid = self.run(service.transfer(self.uow, spec, now=self.now))
        except InsufficientFunds:
            assert amount > self.available(payer)
            return
        assert amount <= self.available(payer)
        self.paid_in_model(spec, payer, payee, paid.row_id)

    @rule(user=users, amount=st.integers(1, 3_000), ttl=st.integers(1, 60))
    def hold(self, user: int, amount: int, ttl: int) -> None:
        spec = self.hold_spec(user, amount, ttl)
        try:
            self.run(service.hold(self.uow, spec, now=self.now))
        except InsufficientFunds:
            assert amount > self.available(user)
            return
        assert amount <= self.available(user)
        self.held_in_model(spec, user)

    @rule(data=st.data(), share=st.floats(0.01, 1.25))
    def capture(self, data: st.DataObject, share: float) -> None:
        if not self.holds:
            return
        hold = data.draw(st.sampled_from(self.holds))
        amount = max(1, int(hold.amount * share))  # sometimes more than is held
        if hold.state == "posted" and data.draw(st.booleans()):
            amount = self.captured(hold) or amount  # the same capture again: a replay
        try:
            captured = self.run(
                service.capture(self.uow, hold_id=hold.id, amount_minor=amount, now=self.now)
            )
        except HoldExpired:
            assert hold.state == "pending"
            assert hold.expires_at <= self.now
            return
        except HoldNotPending:
            # Resolved before: only a capture of the same amount would have been a replay.
            assert hold.state != "pending"
            assert hold.state != "posted" or self.captured(hold) != amount
            return
        except InvalidTransfer:
            assert hold.state == "pending"
            assert hold.expires_at > self.now
            assert amount > hold.amount
            return
        assert (captured.kind, captured.parent_id, captured.amount_minor) == (
            "capture",
            hold.id,
            amount,
        )
        if hold.state == "posted":  # a retried capture: it answers the first and moves nothing
            assert hold.resolution is not None
            assert (captured.id, captured.row_id) == (hold.resolution.id, hold.resolution.row_id)
            return
        assert hold.state == "pending"
        assert hold.expires_at > self.now
        assert amount <= hold.amount
        hold.state, hold.resolution = "posted", captured
        self.held[hold.user] -= hold.amount
        self.posted[hold.user] -= amount

    def captured(self, hold: ModelHold) -> int | None:
        return None if hold.resolution is None else hold.resolution.amount_minor

    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        if not self.holds:
            return
        hold = data.draw(st.sampled_from(self.holds))
        try:
            voided = self.run(service.void(self.uow, hold_id=hold.id, now=self.now))
        except HoldNotPending:
            assert hold.state not in {"pending", "voided"}
            return
        assert (voided.kind, voided.parent_id, voided.amount_minor) == (
            "void",
            hold.id,
            hold.amount,
        )
        if hold.state == "voided":  # a retried void: it answers the first and moves nothing
            assert hold.resolution is not None
            assert (voided.id, voided.row_id) == (hold.resolution.id, hold.resolution.row_id)
            return
        assert hold.state == "pending"
        hold.state, hold.resolution = "voided", voided
        self.held[hold.user] -= hold.amount

    @rule(data=st.data())
    def retry_a_resolution(self, data: st.DataObject) -> None:
        """The same capture or void again (a client retrying after a lost answer)."""
        resolved = [h for h in self.holds if h.state in {"posted", "voided"}]
        if not resolved:
            return
        hold = data.draw(st.sampled_from(resolved))
        assert hold.resolution is not None
        if hold.state == "posted":
            again = self.run(
                service.capture(
                    self.uow,
                    hold_id=hold.id,
                    amount_minor=hold.resolution.amount_minor,
                    now=self.now,
                )
            )
        else:
            again = self.run(service.void(self.uow, hold_id=hold.id, now=self.now))
        assert (again.id, again.row_id, again.amount_minor) == (
            hold.resolution.id,
            hold.resolution.row_id,
            hold.resolution.amount_minor,
        )

    @rule(data=st.data(), amount=st.integers(1, 3_000))
    def refund(self, data: st.DataObject, amount: int) -> None:
        if not self.payments:
            return
        payment = data.draw(st.sampled_from(self.payments))
        try:
            self.run(
                service.refund(
                    self.uow,
                    transfer_id=payment.spec.id,
                    refund_id=new_id("refund"),
                    amount_minor=amount,
                    now=self.now,
                )
            )
        except RefundExceedsCaptured:
            assert payment.refunded + amount > payment.spec.amount_minor
            return
        except InsufficientFunds:
            assert amount > self.available(payment.payee)
            return
        except InvalidTransfer:
            assert amount > payment.spec.amount_minor
            return
        assert payment.refunded + amount <= payment.spec.amount_minor
        assert amount <= self.available(payment.payee)
        payment.refunded += amount
        self.posted[payment.payee] -= amount
        self.posted[payment.payer] += amount

    @rule(data=st.data())
    def retry_a_payment(self, data: st.DataObject) -> None:
        if not self.payments:
            return
        payment = data.draw(st.sampled_from(self.payments))
        again = self.run(service.transfer(self.uow, payment.spec, now=self.now))
        assert again.row_id == payment.row_id  # the first transfer; it moves nothing

    @rule(minutes=st.integers(1, 90))
    def time_passes_and_the_sweep_runs(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        expired = self.run(service.expire_due_holds(self.uow, now=self.now))
        due = [h for h in self.holds if h.state == "pending" and h.expires_at <= self.now]
        assert expired >= len(due)  # earlier examples' holds share the database
        for hold in due:
            hold.state = "expired"
            self.held[hold.user] -= hold.amount

    # --- the in-transaction primitives inside a caller's unit of work ---------------------------

    @rule(
        legs=st.lists(
            st.tuples(users, users, st.integers(1, 2_000)).filter(lambda leg: leg[0] != leg[1]),
            min_size=1,
            max_size=3,
        )
    )
    def a_linked_batch_in_a_unit_of_work(self, legs: list[tuple[int, int, int]]) -> None:
        """ledger.post_linked in the caller's transaction: every leg, or (refused) none."""
        specs = [self.payment_spec(payer, payee, amount) for payer, payee, amount in legs]

        async def use_case() -> list[TransferRecord]:
            async with self.uow:
                posted = await ledger.post_linked(self.uow.session, specs, now=self.now)
                await self.uow.commit()
            return posted

        after = list(self.posted)
        affordable = True
        for payer, payee, amount in legs:  # legs post in order, each seeing the ones before
            affordable = affordable and amount <= after[payer] - self.held[payer]
            after[payer] -= amount
            after[payee] += amount
        try:
            posted = self.run(use_case())
        except InsufficientFunds:
            assert not affordable
            return
        assert affordable
        assert [t.id for t in posted] == [spec.id for spec in specs]
        for spec, (payer, payee, _), row in zip(specs, legs, posted, strict=True):
            self.paid_in_model(spec, payer, payee, row.row_id)

    @rule(
        user=users,
        payee=users,
        hold_amount=st.integers(1, 2_000),
        pay_amount=st.integers(1, 2_000),
        ttl=st.integers(1, 60),
        commits=st.booleans(),
    )
    def hold_and_pay_in_one_unit_of_work(
        self, user: int, payee: int, hold_amount: int, pay_amount: int, ttl: int, commits: bool
    ) -> None:
        """Two ledger calls in one transaction: a hold, then a payment that may be refused
        (under a savepoint, so the use case goes on); then it commits or fails before commit."""
        if user == payee:
            return
        hold = self.hold_spec(user, hold_amount, ttl)
        pay = self.payment_spec(user, payee, pay_amount)

        async def use_case() -> TransferRecord | None:
            async with self.uow:
                await ledger.hold(self.uow.session, hold, now=self.now)
                paid: TransferRecord | None = None
                try:
                    async with self.uow.savepoint():
                        paid = await ledger.transfer(self.uow.session, pay, now=self.now)
                except InsufficientFunds:
                    pass
                if not commits:
                    raise UseCaseAbandoned
                await self.uow.commit()
            return paid

        may_hold = hold_amount <= self.available(user)
        may_pay = may_hold and pay_amount <= self.available(user) - hold_amount
        try:
            paid = self.run(use_case())
        except InsufficientFunds:  # the hold itself was refused: nothing happened
            assert not may_hold
            return
        except UseCaseAbandoned:  # rolled back: the model does not change
            assert not commits
            return
        assert may_hold
        assert commits
        self.held_in_model(hold, user)
        assert (paid is not None) == may_pay
        if paid is not None:
            self.paid_in_model(pay, user, payee, paid.row_id)

    # --- invariants -----------------------------------------------------------------------------

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
        t = ledger.TRANSFERS
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(t.c.id, t.c.amount_minor, t.c.status).where(t.c.id.in_(ids))
                )
            ).all()
            children = (
                await session.execute(
                    select(t.c.parent_id, t.c.kind, t.c.amount_minor).where(t.c.parent_id.in_(ids))
                )
            ).all()
        assert len(rows) == len(ids)  # every hold the model saw committed is stored
        return [
            (amount, status, [(k, a) for parent, k, a in children if parent == hold_id])
            for hold_id, amount, status in rows
        ]

    async def _verify(self) -> tuple[VerifyReport, tuple[int, int, int, int]]:
        await chain_all(self.sessions)
        async with self.sessions() as session:
            report = await verify_ledger(session)
            c = ledger.ACCOUNTS.c
            row = (
                await session.execute(
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


async def test_the_ledger_behaves_like_its_model(fresh_database_url: str) -> None:
    """On each backend, in a database of its own (the invariants verify the whole ledger)."""
    LedgerMachine.database_url = fresh_database_url
    # The machine drives its own event loop, so it runs in a thread of its own.
    await asyncio.to_thread(run_state_machine_as_test, LedgerMachine, settings=MODEL_SETTINGS)

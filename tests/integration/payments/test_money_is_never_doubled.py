"""Findings of a review, each once a way to move money twice or lose it: server errors after a
charge, unconfirmed charges, young withdrawals, half-posted linked batches, disguised holds."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from app.db import SessionMaker
from app.main import create_app
from app.settings import Settings
from app.uow import UnitOfWork
from payments import ledger, service
from payments.errors import InsufficientFunds, InvalidTransfer
from payments.funding import FundingResult, FundingStatus
from payments.records import TransferSpec, wallet
from payments.verify import verify_ledger
from tests.support.ledger import NOW, fund, new_id
from tests.support.users import assert_problem, sign_up


class FlakyCardProcessor:
    """Charges once per reference; its answers can be lost (an error after charging) or late."""

    name = "sandbox"

    def __init__(self) -> None:
        self.charged: dict[str, int] = {}
        self.fail_after_charging = 0
        self.unconfirmed = 0

    async def top_up(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        self.charged.setdefault(reference, amount_minor)  # idempotent by reference
        if self.fail_after_charging:
            self.fail_after_charging -= 1
            raise ConnectionResetError("the answer was lost after the card was charged")
        if self.unconfirmed:
            self.unconfirmed -= 1
            return FundingResult(FundingStatus.UNKNOWN, "")
        return FundingResult(FundingStatus.SUCCEEDED, f"ch_{reference[-12:]}")

    async def withdraw(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        return FundingResult(FundingStatus.SUCCEEDED, f"po_{reference[-12:]}")

    async def status(self, *, reference: str) -> FundingResult:
        return FundingResult(FundingStatus.SUCCEEDED, f"po_{reference[-12:]}")


async def top_up(client: Any, auth: dict[str, str], key: str) -> Any:
    return await client.post(
        "/v1/wallet/top-ups",
        json={"amount_minor": 800, "currency": "CNY"},
        headers={**auth, "Idempotency-Key": key},
    )


async def balance(client: Any, auth: dict[str, str]) -> int:
    return int((await client.get("/v1/wallet?currency=CNY", headers=auth)).json()["balance_minor"])


async def test_a_retry_after_a_server_error_charges_the_card_once(settings: Settings) -> None:
    app = create_app(settings)
    card = FlakyCardProcessor()
    app.state.funding = card
    async with AsyncTestClient(app=app) as client:
        _, auth = await sign_up(client)
        card.fail_after_charging = 1
        assert (await top_up(client, auth, "lost-answer")).status_code == 503
        retried = await top_up(client, auth, "lost-answer")
        assert retried.status_code == 201, retried.text
        assert len(card.charged) == 1  # the retry asked about the same charge
        assert await balance(client, auth) == 800


async def test_an_unconfirmed_charge_is_503_and_its_retry_credits_once(settings: Settings) -> None:
    app = create_app(settings)
    card = FlakyCardProcessor()
    app.state.funding = card
    async with AsyncTestClient(app=app) as client:
        _, auth = await sign_up(client)
        card.unconfirmed = 1
        assert_problem(await top_up(client, auth, "slow-card"), 503, "payment-unconfirmed")
        assert (await top_up(client, auth, "slow-card")).status_code == 201
        assert len(card.charged) == 1
        assert await balance(client, auth) == 800


class LateBank:
    name = "latebank"

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def top_up(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        return FundingResult(FundingStatus.SUCCEEDED, "in")

    async def withdraw(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        return FundingResult(FundingStatus.UNKNOWN, "")

    async def status(self, *, reference: str) -> FundingResult:
        self.asked.append(reference)
        return FundingResult(FundingStatus.DECLINED, "", reason="payment_not_found")


async def test_the_job_leaves_a_young_withdrawal_to_its_request(sessionmaker: SessionMaker) -> None:
    user, bank, uow = uuid.uuid4(), LateBank(), UnitOfWork(sessionmaker)
    await fund(uow, user, 1_000)
    held = await service.withdraw(
        uow, provider=bank, user_id=user, amount_minor=300, currency="EUR",
        transfer_id=new_id("withdrawal"), hold_ttl=timedelta(hours=1), now=NOW,
    )  # fmt: skip
    assert await service.settle_withdrawals(uow, provider=bank, now=NOW + timedelta(seconds=5)) == 0
    assert bank.asked == []  # "not found" from a provider the request has not reached yet
    async with sessionmaker() as session:
        still = await ledger.get_transfer(session, held.id)
    assert still is not None
    assert still.status == "pending"


async def test_a_payout_confirmed_after_its_hold_was_voided_is_still_booked(
    sessionmaker: SessionMaker,
) -> None:
    user, uow = uuid.uuid4(), UnitOfWork(sessionmaker)
    await fund(uow, user, 1_000)
    bank = LateBank()
    held = await service.withdraw(
        uow, provider=bank, user_id=user, amount_minor=300, currency="EUR",
        transfer_id=new_id("withdrawal"), hold_ttl=timedelta(hours=1), now=NOW,
    )  # fmt: skip
    await service.void(uow, hold_id=held.id, now=NOW)  # released, say by an operator
    paid = await service._settle_withdrawal(
        uow, held, FundingResult(FundingStatus.SUCCEEDED, "po"), provider=bank, now=NOW
    )
    assert paid.id == held.id
    async with sessionmaker() as session:
        assert (await service.wallet_balance(session, user, "EUR")).balance_minor == 700
        assert (await verify_ledger(session)).ok


async def test_a_refused_leg_undoes_the_whole_linked_batch_even_if_the_caller_commits(
    sessionmaker: SessionMaker,
) -> None:
    payer, payee = uuid.uuid4(), uuid.uuid4()
    await fund(sessionmaker, payer, 500)

    def pay(amount: int) -> TransferSpec:
        return TransferSpec(
            new_id("p"), wallet(payer, "EUR"), wallet(payee, "EUR"), amount, "p", "r"
        )

    uow = UnitOfWork(sessionmaker)
    async with uow:
        with pytest.raises(InsufficientFunds):
            await ledger.post_linked(uow.session, [pay(300), pay(300)], now=NOW)
        if not uow.on_postgres:  # PostgreSQL aborted the transaction; SQLite could go on
            await uow.commit()
    async with sessionmaker() as session:
        assert (await service.wallet_balance(session, payee, "EUR")).balance_minor == 0


async def test_a_transfer_id_cannot_take_a_resolution_id(sessionmaker: SessionMaker) -> None:
    user = uuid.uuid4()
    spec = TransferSpec(
        "hold-1/posted", wallet(user, "EUR"), wallet(uuid.uuid4(), "EUR"), 1, "p", "r"
    )
    with pytest.raises(InvalidTransfer, match="'/'"):
        await service.transfer(UnitOfWork(sessionmaker), spec, now=NOW)


async def test_verify_finds_a_posted_transfer_disguised_as_a_hold(fresh_engine: Any) -> None:
    from app.db import create_sessionmaker
    from payments.chain_writer import chain_all

    sessionmaker = create_sessionmaker(fresh_engine)
    user = uuid.uuid4()
    erased = await fund(sessionmaker, user, 100)
    await chain_all(sessionmaker)
    async with sessionmaker() as session:
        assert (await verify_ledger(session)).ok
    async with fresh_engine.begin() as conn:  # hide the top-up: a "hold", balances to match
        await conn.execute(
            text("UPDATE ledger_transfers SET is_hold = true WHERE id = :id"), {"id": erased.id}
        )
        await conn.execute(
            text(
                "UPDATE ledger_accounts SET credits_posted = 0, debits_posted = 0 "
                "WHERE id IN (:d, :c)"
            ),
            {"d": erased.debit_account_id, "c": erased.credit_account_id},
        )
    async with sessionmaker() as session:
        report = await verify_ledger(session)
    assert not report.ok
    assert "hold" in (report.problem or "")

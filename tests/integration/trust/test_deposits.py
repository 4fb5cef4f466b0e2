"""Deposits move exactly the right money inside the caller's unit of work, on both backends."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.accounts.models import User
from app.db import SessionMaker
from app.uow import UnitOfWork
from payments.errors import InsufficientFunds
from payments.service import wallet_balance
from payments.verify import verify_ledger
from tests.support.ledger import NOW, fund
from trust import deposits
from trust.errors import DepositNotHeld
from trust.models import Deposit, SubjectType

POOL = SubjectType.POOL


async def new_user(sessionmaker: SessionMaker) -> uuid.UUID:
    async with UnitOfWork(sessionmaker) as uow:
        user = User(
            email=f"{uuid.uuid4().hex[:12]}@example.com",
            password_hash="x",
            display_name="Depositor",
            roles="member",
            created_at=NOW,
        )
        uow.session.add(user)
        await uow.commit()
    return user.id


async def take(
    sessionmaker: SessionMaker, user_id: uuid.UUID, subject_id: uuid.UUID, amount_minor: int
) -> Deposit:
    async with UnitOfWork(sessionmaker) as uow:
        deposit = await deposits.take_deposit(
            uow.session,
            user_id=user_id,
            subject_type=POOL,
            subject_id=subject_id,
            amount_minor=amount_minor,
            currency="CNY",
            expires_at=NOW + timedelta(days=45),
            now=NOW,
        )
        await uow.commit()
    return deposit


async def balances(sessionmaker: SessionMaker, user_id: uuid.UUID) -> tuple[int, int]:
    async with sessionmaker() as session:
        balance = await wallet_balance(session, user_id, "CNY")
    return balance.available_minor, balance.held_minor


async def test_a_deposit_is_held_once_then_released_in_full(sessionmaker: SessionMaker) -> None:
    user = await new_user(sessionmaker)
    subject = uuid.uuid4()
    await fund(sessionmaker, user, 10_000, "CNY")
    first = await take(sessionmaker, user, subject, 2_500)
    again = await take(sessionmaker, user, subject, 2_500)  # a retried use case
    assert again.id == first.id
    assert await balances(sessionmaker, user) == (7_500, 2_500)

    async with UnitOfWork(sessionmaker) as uow:
        released = await deposits.release_deposits(
            uow.session, subject_type=POOL, subject_id=subject, now=NOW
        )
        await uow.commit()
    assert released == 1
    assert await balances(sessionmaker, user) == (10_000, 0)
    async with UnitOfWork(sessionmaker) as uow:
        with pytest.raises(DepositNotHeld):
            await deposits.forfeit_deposits(
                uow.session,
                subject_type=POOL,
                subject_id=subject,
                user_id=user,
                beneficiary_id=None,
                now=NOW,
            )


async def test_a_forfeited_deposit_goes_to_the_insurance_fund_and_the_ledger_balances(
    sessionmaker: SessionMaker,
) -> None:
    user = await new_user(sessionmaker)
    subject = uuid.uuid4()
    await fund(sessionmaker, user, 4_000, "CNY")
    await take(sessionmaker, user, subject, 4_000)
    async with UnitOfWork(sessionmaker) as uow:
        amount = await deposits.forfeit_deposits(
            uow.session,
            subject_type=POOL,
            subject_id=subject,
            user_id=user,
            beneficiary_id=None,
            now=NOW,
        )
        await uow.commit()
    assert amount == 4_000
    assert await balances(sessionmaker, user) == (0, 0)
    async with sessionmaker() as session:
        stored = (
            await session.execute(
                select(Deposit.status).where(Deposit.subject_id == subject)  # type: ignore[arg-type]
            )
        ).scalar_one()
    # verify_ledger takes its own snapshot only in a session that has not begun yet.
    async with sessionmaker() as session:
        report = await verify_ledger(session)
    assert stored == "forfeited"
    assert report.ok, report.problem


async def test_a_deposit_the_wallet_cannot_cover_records_nothing(
    sessionmaker: SessionMaker,
) -> None:
    user = await new_user(sessionmaker)
    subject = uuid.uuid4()
    await fund(sessionmaker, user, 999, "CNY")
    with pytest.raises(InsufficientFunds):
        await take(sessionmaker, user, subject, 1_000)
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                select(Deposit.id).where(Deposit.subject_id == subject)  # type: ignore[arg-type]
            )
        ).all()
    assert rows == []
    assert await balances(sessionmaker, user) == (999, 0)

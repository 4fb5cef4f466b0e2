"""The withdrawal sweep reads the pending withdrawals by the index of pending holds that expire,
not the whole ledger (migration 0016 narrowed that index to holds with an expiry; the sweep's
query says every withdrawal has one). Checked on the plan PostgreSQL ran (auto_explain), on a
database of the test's own, so that what other tests left behind does not change the plan."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from app.db import create_engine, create_sessionmaker
from app.uow import UnitOfWork
from payments import service
from payments.funding import funding_provider
from tests.support.ledger import NOW, fund
from tests.support.plans import explaining_engine, rows_read
from tests.support.services import migrate, on_a_new_postgres_database

LEDGER = 4_000


@pytest.mark.parametrize(
    "planner",
    [
        (),
        # A planner that finds sorting dear, as some statistics make it: ordered by row id, the
        # sweep then walked the whole ledger by its primary key for its first few withdrawals.
        ("SET enable_sort = off",),
    ],
    ids=["default", "sorting-dear"],
)
async def test_the_withdrawal_sweep_reads_only_pending_withdrawals(planner: tuple[str]) -> None:
    async def sweep(postgres_url: str) -> None:
        await _sweep_reads_only_pending_withdrawals(postgres_url, planner)

    await on_a_new_postgres_database(sweep)


async def _sweep_reads_only_pending_withdrawals(postgres_url: str, planner: tuple[str]) -> None:
    await migrate(postgres_url)
    engine = create_engine(postgres_url, pool_size=1)
    sessions = create_sessionmaker(engine)
    user = uuid.uuid4()
    try:
        async with sessions() as session:
            await session.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, display_name, roles,"
                    " created_at, auth_version) VALUES (:id, :email, 'x', 'Sweep', 'member',"
                    " now(), 0)"
                ),
                {"id": user, "email": f"sweep-{user.hex}@example.com"},
            )
            await session.commit()
        first = await fund(sessions, user, 1_000, "CNY", now=NOW)
        # A ledger of other transfers besides (voided holds: nothing to chain or replay).
        async with sessions() as session:
            await session.execute(
                text(
                    "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id,"
                    " amount_minor, currency, kind, ref, status, is_hold, refunded_minor,"
                    " created_at) SELECT 'sweep-plan:' || :user || ':' || i, :debit, :credit,"
                    " 1, 'CNY', 'top_up', 'sweep-plan', 'voided', true, 0, now()"
                    " FROM generate_series(1, :n) i"
                ),
                {
                    "user": str(user),
                    "debit": first.debit_account_id,
                    "credit": first.credit_account_id,
                    "n": LEDGER,
                },
            )
            await session.commit()
        async with explaining_engine(postgres_url, *planner) as (explaining, plans):
            decided = await service.settle_withdrawals(
                UnitOfWork(create_sessionmaker(explaining)),
                provider=funding_provider("sandbox"),
                now=NOW + timedelta(days=1),
            )
        assert decided == 0
        read = [found for plan in plans for found in rows_read(plan, ("ledger_transfers",))]
        assert read, "the sweep's statement was seen"
        assert max(rows for _, rows in read) <= 1, read
    finally:
        await engine.dispose()

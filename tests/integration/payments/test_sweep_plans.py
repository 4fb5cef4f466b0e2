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
from payments.funding import FundingResult, FundingStatus
from tests.support.ledger import NOW, fund
from tests.support.plans import explaining_engine, rows_read
from tests.support.services import migrate, on_a_new_postgres_database

LEDGER = 4_000
PENDING = 10
PAGE = 2


class StuckBank:
    """A provider that has not decided any payout yet."""

    name = "stuck"

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def top_up(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        raise AssertionError("the sweep only asks")

    async def withdraw(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        raise AssertionError("the sweep only asks")

    async def status(self, *, reference: str) -> FundingResult:
        self.asked.append(reference)
        return FundingResult(FundingStatus.UNKNOWN, "")


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
async def test_the_withdrawal_sweep_reads_only_pending_withdrawals(
    planner: tuple[str, ...],
) -> None:
    async def sweep(postgres_url: str) -> None:
        await _sweep_reads_only_pending_withdrawals(postgres_url, planner)

    await on_a_new_postgres_database(sweep)


async def _sweep_reads_only_pending_withdrawals(
    postgres_url: str, planner: tuple[str, ...]
) -> None:
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
            # Withdrawals the provider has not decided, each expiring a minute after the last:
            # the sweep pages through them, and each page starts where the last one ended.
            await session.execute(
                text(
                    "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id,"
                    " amount_minor, currency, kind, ref, status, is_hold, refunded_minor,"
                    " created_at, expires_at) SELECT 'sweep-plan-out:' || :user || ':' || i,"
                    " :debit, :credit, 1, 'CNY', 'withdrawal', 'funding:stuck:' || i,"
                    " 'pending', true, 0, CAST(:now AS timestamptz),"
                    " CAST(:now AS timestamptz) + i * interval '1 minute'"
                    " FROM generate_series(1, :n) i"
                ),
                {
                    "user": str(user),
                    "debit": first.debit_account_id,
                    "credit": first.credit_account_id,
                    "n": PENDING,
                    "now": NOW,
                },
            )
            await session.commit()
        stuck = StuckBank()
        async with explaining_engine(postgres_url, *planner) as (explaining, plans):
            decided = await service.settle_withdrawals(
                UnitOfWork(create_sessionmaker(explaining)),
                provider=stuck,
                now=NOW + timedelta(days=1),
                min_age=timedelta(0),
                limit=PAGE,
            )
        assert decided == 0
        assert len(stuck.asked) == PENDING  # every one asked, once
        read = [found for plan in plans for found in rows_read(plan, ("ledger_transfers",))]
        assert len(read) >= PENDING // PAGE, "the sweep's statements were seen"
        # Pending holds that expire at most, never the ledger's settled rows.
        assert max(rows for _, rows in read) <= PENDING, read
        if planner:
            # Walking the index in order, each page starts where the last one ended (about a
            # page and its boundary row each), not at the oldest withdrawal again.
            assert sum(rows for _, rows in read) <= 2 * PENDING + len(read), read
    finally:
        await engine.dispose()

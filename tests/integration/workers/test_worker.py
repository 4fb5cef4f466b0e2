"""The arq worker, for real: jobs enqueued in Redis, run by a Worker against the database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from arq.worker import Worker

from app.db import SessionMaker
from app.main import create_redis
from app.uow import UnitOfWork
from payments import ledger, service
from payments.models import AccountKind, TransferStatus
from payments.records import TransferSpec, escrow, wallet
from payments.verify import verify_ledger
from tests.conftest import make_settings
from tests.support.ledger import fund, new_id
from workers.settings import worker_options


async def run_jobs_once(database_url: str, redis_url: str, *jobs: str) -> None:
    settings = make_settings(database_url, redis_url)
    redis = create_redis(redis_url)
    try:
        for job in jobs:
            await redis.enqueue_job(job, _job_id=f"{job}:{uuid.uuid4().hex}")
        options = worker_options(settings) | {"cron_jobs": [], "burst": True}
        worker = Worker(**options, handle_signals=False, poll_delay=0.05)
        await worker.async_run()
        assert worker.jobs_failed == 0
        await worker.close()
    finally:
        await redis.aclose()


async def test_the_worker_expires_holds_past_their_expiry(
    database_url: str, redis_url: str, sessionmaker: SessionMaker
) -> None:
    user = uuid.uuid4()
    deposit = escrow(AccountKind.DEPOSIT_ESCROW, uuid.uuid4(), "EUR")
    now = datetime.now(UTC)
    await fund(sessionmaker, user, 900, now=now)
    held = await service.hold(
        UnitOfWork(sessionmaker),
        TransferSpec(
            new_id("hold"),
            wallet(user, "EUR"),
            deposit,
            900,
            "deposit",
            "test",
            expires_at=now + timedelta(milliseconds=300),
        ),
        now=now,
    )
    await asyncio.sleep(0.4)
    await run_jobs_once(database_url, redis_url, "expire_holds", "chain_ledger")
    async with sessionmaker() as session:
        row = await ledger.get_transfer(session, held.id)
        balance = await service.wallet_balance(session, user, "EUR")
        report = await verify_ledger(session)
    assert row is not None
    assert row.status is TransferStatus.EXPIRED
    assert (balance.available_minor, balance.held_minor) == (900, 0)
    assert report.ok, report.problem

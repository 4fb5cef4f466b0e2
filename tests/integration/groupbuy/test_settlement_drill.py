"""The settlement drill: a real `copool worker` settling a pool of 500 joins is killed with
SIGKILL between two chunks; a new worker finishes the work, and the pool is settled exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from arq import create_pool
from arq.connections import RedisSettings
from sqlalchemy import func, select

from app.accounts.models import User
from app.db import create_engine, create_sessionmaker
from app.settings import Settings
from app.uow import UnitOfWork
from groupbuy import pricing, service
from groupbuy.models import Join, JoinStatus
from payments.models import Transfer
from tests.conftest import make_settings
from tests.support.crowd import funded_members
from tests.support.ledger import COPOOL, fund
from tests.support.pools import ledger_verifies, wallet
from tests.support.services import flushed_redis
from workers.settings import job_deserializer, job_serializer

JOINS = 500
PRICE = 1_000


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [COPOOL, "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def charged(sessionmaker: object, pool_id: uuid.UUID) -> int:
    async with sessionmaker() as session:  # type: ignore[operator]
        return int(
            (
                await session.execute(
                    select(func.count()).where(
                        Join.pool_id == pool_id,  # type: ignore[arg-type]
                        Join.status == JoinStatus.CHARGED.value,  # type: ignore[arg-type]
                    )
                )
            ).scalar_one()
        )


async def test_a_worker_killed_mid_settlement_is_replaced_and_the_pool_settles_exactly_once(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    redis_url = flushed_redis()
    settings: Settings = make_settings(fresh_postgres_url, redis_url)
    engine = create_engine(fresh_postgres_url)
    sessionmaker = create_sessionmaker(engine)
    now = datetime.now(UTC)
    config = settings.trust()
    env = {
        **os.environ,
        "COPOOL_ENV": "test",
        "COPOOL_DATABASE_URL": fresh_postgres_url,
        "COPOOL_REDIS_URL": redis_url,
        "COPOOL_SECRET_KEY": settings.secret_key,
        "COPOOL_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "worker.log"
    workers: list[subprocess.Popen[bytes]] = []
    arq = await create_pool(
        RedisSettings.from_dsn(redis_url),
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    try:
        organizer = User(
            email=f"org-{uuid.uuid4().hex[:8]}@example.com",
            password_hash="x",
            display_name="Organizer",
            roles="member,organizer",
            created_at=now,
        )
        async with UnitOfWork(sessionmaker) as uow:
            uow.session.add(organizer)
            await uow.commit()
        await fund(sessionmaker, organizer.id, 1_000_000, "CNY", now=now)
        pool = await service.create_pool(
            UnitOfWork(sessionmaker),
            organizer_id=organizer.id,
            draft=service.PoolDraft(
                title="Drill",
                description="",
                currency="CNY",
                tiers=[pricing.Tier(1, PRICE), pricing.Tier(100, 900)],
                min_quantity=1,
                max_quantity=JOINS,
                deadline=now + timedelta(hours=1),
            ),
            platform_fee_bp=settings.pool_fee_bp,
            config=config,
            schedule=None,
            now=now,
        )
        members = await funded_members(
            sessionmaker, settings, count=JOINS, amount_minor=5_000, now=now
        )
        for start in range(0, JOINS, 25):
            await asyncio.gather(
                *(
                    service.join_pool(
                        UnitOfWork(sessionmaker),
                        pool_id=pool.id,
                        user_id=user_id,
                        quantity=1,
                        request_id=None,
                        config=config,
                        schedule=None,
                        admission=None,
                        now=now,
                    )
                    for user_id, _ in members[start : start + 25]
                )
            )
        async with sessionmaker() as session:
            full = await service.get_pool(session, pool.id)
        assert (full.status, full.final_unit_price_minor) == ("succeeded", 900)

        workers.append(start_worker(env, log))
        await arq.enqueue_job("settle_pool", str(pool.id), _job_id=f"drill-1-{pool.id}")
        deadline = time.monotonic() + 60
        while not 0 < await charged(sessionmaker, pool.id) < JOINS:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.01)
        os.killpg(workers[0].pid, signal.SIGKILL)  # between two chunks, or inside one
        workers[0].wait(timeout=10)
        assert 0 < await charged(sessionmaker, pool.id) < JOINS

        workers.append(start_worker(env, log))
        await arq.enqueue_job("settle_pool", str(pool.id), _job_id=f"drill-2-{pool.id}")
        deadline = time.monotonic() + 90
        while True:
            async with sessionmaker() as session:
                settled = await service.get_pool(session, pool.id)
            if settled.settled_at is not None:
                break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.2)

        assert await charged(sessionmaker, pool.id) == JOINS
        async with sessionmaker() as session:
            payouts = (
                await session.execute(
                    select(func.count()).where(
                        Transfer.id.like(f"settle:pool:{pool.id}:%")  # type: ignore[union-attr,attr-defined]
                    )
                )
            ).scalar_one()
            charges = (
                await session.execute(
                    select(func.sum(Join.charged_minor)).where(Join.pool_id == pool.id)  # type: ignore[arg-type]
                )
            ).scalar_one()
        assert payouts == 2  # the organizer's payout and the platform's fee, once each
        assert charges == JOINS * 900
        total = JOINS * 900
        fee = total * settings.pool_fee_bp // 10_000
        deposit = JOINS * PRICE * config.rules.new_user_deposit_bp // 10_000
        assert await wallet(sessionmaker, organizer.id) == (
            1_000_000 - deposit + total - fee,
            deposit,
        )
        for user_id, _ in members[:5]:
            assert await wallet(sessionmaker, user_id) == (5_000 - 900, 0)
        await ledger_verifies(sessionmaker)

    finally:
        for process in workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=15)
        await arq.aclose()
        await engine.dispose()

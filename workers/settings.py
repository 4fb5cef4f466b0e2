"""arq worker configuration: `copool worker` (or the embedded server) runs WorkerSettings."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import msgspec
from arq.connections import RedisSettings
from arq.cron import CronJob, cron

import groupbuy.jobs
import payments.jobs
import rides.jobs
import trust.jobs
from app.clock import utc_now
from app.db import create_engine, create_sessionmaker
from app.settings import Settings, load_settings
from payments.funding import funding_provider
from workers.jobs import heartbeat, purge_idempotency_keys


def _encode_other(obj: Any) -> Any:
    # arq stores a failed job's exception as its result (its own, or JobExecutionFailed once
    # the retries are spent): kept as its repr, so that the failure is recorded, not lost.
    if isinstance(obj, BaseException):
        return repr(obj)
    raise NotImplementedError(f"a job cannot carry a {type(obj).__name__}")


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_encode_other)


def job_serializer(obj: Any) -> bytes:
    return _ENCODER.encode(obj)


def job_deserializer(data: bytes) -> Any:
    return msgspec.msgpack.decode(data)


#: The worker's Redis connect timeout (arq's default, 1 s, failed a job's bookkeeping when a busy
#: machine answered a connect late), as the app's.
REDIS_CONNECT_TIMEOUT_S = 2


def redis_settings(url: str) -> RedisSettings:
    return dataclasses.replace(RedisSettings.from_dsn(url), conn_timeout=REDIS_CONNECT_TIMEOUT_S)


def heartbeat_cron(interval_s: int) -> CronJob:
    seconds = set(range(0, 60, max(1, min(interval_s, 60))))
    return cron(heartbeat, second=seconds, run_at_startup=True, unique=True, timeout=10)


DOMAIN_JOBS = (payments.jobs, groupbuy.jobs, rides.jobs, trust.jobs)
#: Periodic sweeps of every domain, each idempotent: a crashed job's work is picked up next time.
SWEEPS = [
    *(sweep for domain in DOMAIN_JOBS for sweep in domain.SWEEPS),
    cron(purge_idempotency_keys, minute={17}, second={0}, unique=True, timeout=300),
]


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or load_settings()
    ctx["settings"] = settings
    ctx.setdefault("clock", utc_now)
    ctx.setdefault("funding", funding_provider(settings.funding_provider))
    ctx["engine"] = create_engine(
        settings.database_url,
        pool_size=5,
        connect_timeout_s=settings.db_connect_timeout_s,
        statement_timeout_s=settings.db_statement_timeout_s,
    )
    ctx["sessionmaker"] = create_sessionmaker(ctx["engine"])


async def shutdown(ctx: dict[str, Any]) -> None:
    engine = ctx.get("engine")
    if engine is not None:
        await engine.dispose()


class WorkerSettings:
    """Functions, schedules and hooks of the copool worker."""

    functions: ClassVar[list[Any]] = [
        heartbeat,
        purge_idempotency_keys,
        *(job for domain in DOMAIN_JOBS for job in domain.FUNCTIONS),
    ]
    cron_jobs: ClassVar[list[CronJob]] = [heartbeat_cron(10), *SWEEPS]
    on_startup = startup
    on_shutdown = shutdown
    job_serializer = job_serializer
    job_deserializer = job_deserializer
    keep_result = 60
    max_jobs = 10


def worker_options(settings: Settings) -> dict[str, Any]:
    """WorkerSettings as keyword arguments for arq's Worker, bound to these settings."""
    options = {k: v for k, v in vars(WorkerSettings).items() if not k.startswith("_")}
    options["cron_jobs"] = [heartbeat_cron(settings.worker_heartbeat_s), *SWEEPS]
    options["redis_settings"] = redis_settings(settings.redis_url)
    options["ctx"] = {"settings": settings}
    return options

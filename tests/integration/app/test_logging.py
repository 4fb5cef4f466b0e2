"""Structured logs: JSON lines in prod, each carrying the request id; quiet periodic jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from arq.connections import RedisSettings
from arq.cron import cron
from arq.worker import Worker
from litestar.testing import AsyncTestClient

from app.logging import configure_logging
from app.main import create_app
from app.settings import Env
from tests.conftest import make_settings
from tests.support.worker import finish_jobs


async def test_prod_logs_are_json_lines_with_the_request_id(
    database_url: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(database_url, redis_url, env=Env.PROD, log_level="INFO")
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.get("/v1/nowhere", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    [request_line] = [line for line in lines if line.get("event") == "request"]
    assert request_line["request_id"] == "trace-42"
    assert request_line["status"] == 404
    assert request_line["path"] == "/v1/nowhere"


async def nothing_to_do(ctx: dict[str, Any]) -> int:
    return 0


async def expired_two(ctx: dict[str, Any]) -> int:
    return 2


async def run_worker_briefly(redis_url: str) -> None:
    worker = Worker(
        functions=[],
        cron_jobs=[
            cron(nothing_to_do, run_at_startup=True, unique=True),
            cron(expired_two, run_at_startup=True, unique=True),
        ],
        redis_settings=RedisSettings.from_dsn(redis_url),
        handle_signals=False,
        poll_delay=0.05,
    )
    task = asyncio.create_task(worker.async_run())
    try:
        for _ in range(100):
            if worker.jobs_complete >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await finish_jobs(worker)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()
    assert worker.jobs_complete >= 2


async def test_routine_periodic_runs_stay_out_of_info_logs(
    database_url: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(make_settings(database_url, redis_url, env=Env.DEV, log_level="INFO"))
    await run_worker_briefly(redis_url)
    err = capsys.readouterr().err
    # It did something: one INFO line, when it finished (not when it started).
    assert [line for line in err.splitlines() if "expired_two" in line and "●" in line]
    assert not [line for line in err.splitlines() if "expired_two" in line and "→" in line]
    assert not [line for line in err.splitlines() if "cron:nothing_to_do" in line and "●" in line]
    assert not [line for line in err.splitlines() if "cron:nothing_to_do()" in line]


async def test_at_debug_every_periodic_run_is_logged(
    database_url: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(make_settings(database_url, redis_url, env=Env.DEV, log_level="DEBUG"))
    try:
        await run_worker_briefly(redis_url)
    finally:
        configure_logging(make_settings(database_url, redis_url, log_level="WARNING"))
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "cron:nothing_to_do ●" in line]

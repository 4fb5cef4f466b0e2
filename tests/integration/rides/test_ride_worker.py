"""The rides jobs in a real arq worker (both backends): posting an offer and a request enqueues
the window's matching run in Redis; the worker hands the region to its own job, proposes within
seconds of the window's end, and queues the expiry run for later. On a database of its own: on
the shared one the worker also matched every region the earlier tests left open."""

from __future__ import annotations

import asyncio
import contextlib
import time

from arq.worker import Worker

from app.main import create_redis
from tests.conftest import make_settings
from tests.support.rides import insured_driver, new_area, offer_body, post, request_body, rider
from tests.support.trust import TrustWorld
from tests.support.worker import finish_jobs
from workers.settings import worker_options


async def test_a_real_worker_proposes_within_seconds_of_the_window(
    own_world: TrustWorld, fresh_database_url: str, redis_url: str
) -> None:
    world, settings = own_world, make_settings(fresh_database_url, redis_url)
    area = new_area()
    _, driver_h = await insured_driver(world)
    _, rider_h = await rider(world)
    options = worker_options(settings) | {"cron_jobs": []}
    options["ctx"].update(clock=world.clock)
    worker = Worker(**options, handle_signals=False, poll_delay=0.05)
    running = asyncio.create_task(worker.async_run())
    redis = create_redis(settings.redis_url)
    try:
        await post(world, "/v1/rides/offers", offer_body(world, area), driver_h)
        request = await post(world, "/v1/rides/requests", request_body(world, area), rider_h)
        posted = time.monotonic()
        status = "open"
        while status == "open" and time.monotonic() - posted < 20:
            await asyncio.sleep(0.1)
            seen = await world.client.get(f"/v1/rides/requests/{request['id']}", headers=rider_h)
            status = seen.json()["status"]
        waited = time.monotonic() - posted
        assert status == "proposed"
        assert waited < settings.ride_match_window_s + 5, waited
        assert seen.json()["match"]["driver_id"]
        assert [key async for key in redis.scan_iter("arq:job:expire-rides:*")]
        assert worker.jobs_failed == 0
    finally:
        await finish_jobs(worker)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.close()
        await redis.aclose()

"""GET /v1/health against real services, and what it says when one stops."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.testing import AsyncTestClient

from app.embedded import EmbeddedRedis
from app.main import create_app
from tests.conftest import make_settings


async def test_health_is_ok_with_a_live_worker(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url, inline_worker=True, worker_heartbeat_s=1)
    async with AsyncTestClient(app=create_app(settings)) as client:
        body: dict[str, Any] = {}
        for _ in range(50):
            body = (await client.get("/v1/health")).json()
            if body["worker"]["status"] == "ok":
                break
            await asyncio.sleep(0.1)
    assert body["status"] == "ok", body
    assert body["database"] == "ok"
    assert body["redis"] == "ok"
    assert body["worker"]["last_beat_at"] is not None


async def test_health_without_a_worker_is_degraded(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["redis"]) == ("degraded", "ok", "ok")
    assert body["worker"]["status"] == "absent"


async def test_a_stopped_redis_is_reported_as_degraded(database_url: str) -> None:
    redis_server = EmbeddedRedis(persist=False)
    url = redis_server.start()
    try:
        async with AsyncTestClient(app=create_app(make_settings(database_url, url))) as client:
            before = (await client.get("/v1/health")).json()
            redis_server.stop()
            response = await client.get("/v1/health")
    finally:
        redis_server.stop()
    assert before["redis"] == "ok"
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["redis"]) == ("degraded", "ok", "down")
    assert body["worker"]["status"] == "unknown"


async def test_a_database_that_is_down_is_503(redis_url: str) -> None:
    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
    async with AsyncTestClient(app=create_app(make_settings(unreachable, redis_url))) as client:
        response = await client.get("/v1/health")
    assert response.status_code == 503
    assert response.json()["database"] == "down"


async def test_requests_while_the_database_is_down_are_503_not_500(redis_url: str) -> None:
    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
    async with AsyncTestClient(app=create_app(make_settings(unreachable, redis_url))) as client:
        response = await client.post(
            "/v1/auth/login", json={"email": "a@example.com", "password": "whatever1"}
        )
    assert response.status_code == 503
    assert response.json()["type"] == "service-unavailable"
    assert response.headers["retry-after"] == "5"

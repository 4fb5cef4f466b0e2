"""GET /v1/health: can this process reach its database, Redis and a live worker?"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.auth import PUBLIC
from workers.jobs import HEARTBEAT_KEY

CHECK_TIMEOUT_S = 2.0
Status = Literal["ok", "down"]


class WorkerHealth(msgspec.Struct):
    status: Literal["ok", "stale", "absent", "unknown"]
    last_beat_at: datetime | None


class HealthOut(msgspec.Struct):
    status: Literal["ok", "degraded", "down"]
    database: Status
    redis: Status
    worker: WorkerHealth


async def _database_ok(state: State) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError):
        return False
    return True


async def _redis_beat(state: State) -> tuple[bool, bytes | None]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            pipe = state.redis.pipeline(transaction=False)
            pipe.ping()
            pipe.get(HEARTBEAT_KEY)
            _, beat = await pipe.execute()
    except (RedisError, OSError, TimeoutError):
        return False, None
    return True, beat


def worker_health(
    redis_ok: bool, beat: bytes | None, now: datetime, interval_s: int
) -> WorkerHealth:
    if not redis_ok:
        return WorkerHealth(status="unknown", last_beat_at=None)
    if beat is None:
        return WorkerHealth(status="absent", last_beat_at=None)
    last = datetime.fromisoformat(beat.decode())
    fresh = (now - last).total_seconds() <= 3 * interval_s
    return WorkerHealth(status="ok" if fresh else "stale", last_beat_at=last)


class HealthController(Controller):
    path = "/v1/health"
    tags = ["operations"]

    @get(
        "",
        summary="Database, Redis and worker status (no auth)",
        security=PUBLIC,
        description="200 when the database answers (status `degraded` if Redis or the worker "
        "does not); 503 when the database is down.",
        responses={503: ResponseSpec(data_container=HealthOut, description="The database is down")},
    )
    async def health(self, request: Request[Any, Any, State]) -> Response[HealthOut]:
        state = request.app.state
        db_ok, (redis_ok, beat) = await asyncio.gather(_database_ok(state), _redis_beat(state))
        worker = worker_health(redis_ok, beat, state.clock(), state.settings.worker_heartbeat_s)
        overall: Literal["ok", "degraded", "down"] = "ok"
        if not db_ok:
            overall = "down"
        elif not redis_ok or worker.status != "ok":
            overall = "degraded"
        body = HealthOut(
            status=overall,
            database="ok" if db_ok else "down",
            redis="ok" if redis_ok else "down",
            worker=worker,
        )
        return Response(body, status_code=503 if not db_ok else 200)

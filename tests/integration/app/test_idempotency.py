"""The Idempotency-Key mechanism itself, on a route that fails once with a server error."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import post
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient

from app.main import create_app
from app.settings import Settings
from tests.support.users import sign_up


def app_with_flaky_route(settings: Settings) -> Any:
    calls = {"n": 0}

    @post("/v1/test/flaky", opt={"idempotent": True}, status_code=201)
    async def flaky(data: JSONBody[dict[str, int]]) -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the first call breaks")
        return {"call": calls["n"], "echo": data["x"]}

    app = create_app(settings)
    app.register(flaky)
    return app, calls


async def test_a_server_error_releases_the_key_and_the_retry_runs(settings: Settings) -> None:
    app, calls = app_with_flaky_route(settings)
    async with AsyncTestClient(app=app) as client:
        _, auth = await sign_up(client)
        headers = {**auth, "Idempotency-Key": str(uuid.uuid4())}
        first = await client.post("/v1/test/flaky", json={"x": 7}, headers=headers)
        second = await client.post("/v1/test/flaky", json={"x": 7}, headers=headers)
        third = await client.post("/v1/test/flaky", json={"x": 7}, headers=headers)
    assert first.status_code == 500
    assert first.json()["type"] == "internal-error"
    assert second.status_code == 201
    assert second.json() == {"call": 2, "echo": 7}
    assert third.content == second.content  # replayed, not run again
    assert calls["n"] == 2

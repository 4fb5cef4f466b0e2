"""Structured logs: JSON lines in prod, each carrying the request id."""

from __future__ import annotations

import json

import pytest
from litestar.testing import AsyncTestClient

from app.main import create_app
from app.settings import Env
from tests.conftest import make_settings


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

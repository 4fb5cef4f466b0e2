"""Helpers for tests that need a signed-up user."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import PASSWORD


def app_notifier(client: AsyncTestClient[Any]) -> Callable[[uuid.UUID], Awaitable[None]]:
    """The app's auth-change notifier, run on the app's own event loop (the test client's
    portal, where its Redis connections live): called from the test's loop it failed with a
    future attached to a different loop, and the other processes were never told."""
    notify = client.app.state.notify_auth_change

    async def on_app_loop(user_id: uuid.UUID) -> None:
        await asyncio.wrap_future(client.blocking_portal.start_task_soon(notify, user_id))

    return on_app_loop


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


async def sign_up(
    client: AsyncTestClient[Any], *, roles: list[str] | None = None, email: str | None = None
) -> tuple[str, dict[str, str]]:
    """Register a fresh user; return (user_id, auth headers)."""
    body: dict[str, Any] = {
        "email": email or unique_email(),
        "password": PASSWORD,
        "display_name": "Test User",
    }
    if roles is not None:
        body["roles"] = roles
    response = await client.post("/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    data = response.json()
    return data["user_id"], {"Authorization": f"Bearer {data['token']}"}


PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == type_
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body

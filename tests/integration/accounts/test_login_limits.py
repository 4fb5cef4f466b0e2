"""Failed logins: a guesser is limited per address; the owner elsewhere is never locked out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import PASSWORD, make_settings
from tests.support.users import assert_problem, sign_up, unique_email

PEER_HEADER = b"x-test-peer"


def with_peer_from_header(app: Litestar) -> Litestar:
    """Let each test request say which address it comes from (the test client has only one)."""
    inner = app.asgi_handler

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        peer = dict(scope.get("headers", [])).get(PEER_HEADER)
        if peer:
            scope["client"] = (peer.decode(), 50000)
        await inner(scope, receive, send)

    app.asgi_handler = handler
    return app


@pytest.fixture
def limits(database_url: str, redis_url: str) -> Settings:
    return make_settings(
        database_url,
        redis_url,
        login_limit_per_ip=1000,
        login_limit_per_email=3,
        login_limit_per_email_total=6,
    )


@pytest.fixture
async def client(limits: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=with_peer_from_header(create_app(limits))) as test_client:
        yield test_client


async def login(client: AsyncTestClient[Any], email: str, password: str, peer: str) -> Any:
    return await client.post(
        "/v1/auth/login",
        json={"email": email, "password": password},
        headers={"X-Test-Peer": peer},
    )


async def test_a_guesser_is_limited_but_the_owner_elsewhere_signs_in(
    client: AsyncTestClient[Any], limits: Settings
) -> None:
    email = unique_email()
    await sign_up(client, email=email)
    for _ in range(3):
        assert (await login(client, email, "wrong-guess", "203.0.113.66")).status_code == 401
    # The guesser's address now waits, even with the right password...
    limited = await login(client, email, PASSWORD, "203.0.113.66")
    assert_problem(limited, 429, "rate-limited")
    assert 1 <= int(limited.headers["retry-after"]) <= limits.login_window_s
    # ...while the owner, from an address that has not failed, signs in at once.
    assert (await login(client, email, PASSWORD, "198.51.100.10")).status_code == 200


async def test_guesses_from_many_addresses_are_capped_per_email_but_known_addresses_pass(
    client: AsyncTestClient[Any],
) -> None:
    email = unique_email()
    await sign_up(client, email=email)
    home = "198.51.100.10"
    assert (await login(client, email, PASSWORD, home)).status_code == 200

    for attacker in ("203.0.113.1", "203.0.113.2"):
        for _ in range(3):
            assert (await login(client, email, "wrong-guess", attacker)).status_code == 401
    # Six failures in the window: every further guess for this email waits, from anywhere new.
    fresh = await login(client, email, "another-guess", "203.0.113.3")
    assert_problem(fresh, 429, "rate-limited")
    assert_problem(await login(client, email, PASSWORD, "203.0.113.4"), 429, "rate-limited")
    # The owner's address, which signed in before, is not locked out.
    assert (await login(client, email, PASSWORD, home)).status_code == 200


async def test_the_limits_are_per_email(client: AsyncTestClient[Any]) -> None:
    target, other = unique_email(), unique_email()
    await sign_up(client, email=target)
    await sign_up(client, email=other)
    for _ in range(3):
        await login(client, target, "wrong-guess", "203.0.113.9")
    assert (await login(client, other, PASSWORD, "203.0.113.9")).status_code == 200


async def test_a_client_address_is_still_limited_across_emails(
    database_url: str, redis_url: str
) -> None:
    settings = make_settings(database_url, redis_url, login_limit_per_ip=4)
    async with AsyncTestClient(app=with_peer_from_header(create_app(settings))) as client:
        statuses = [
            (await login(client, unique_email(), "whatever1", "203.0.113.50")).status_code
            for _ in range(5)
        ]
        elsewhere = await login(client, unique_email(), "whatever1", "203.0.113.51")
    assert statuses == [401, 401, 401, 401, 429]
    assert elsewhere.status_code == 401


async def test_in_process_a_forwarded_for_header_is_ignored_by_default(
    database_url: str, redis_url: str
) -> None:
    settings = make_settings(database_url, redis_url, login_limit_per_ip=2)
    async with AsyncTestClient(app=with_peer_from_header(create_app(settings))) as client:
        statuses = [
            (
                await client.post(
                    "/v1/auth/login",
                    json={"email": unique_email(), "password": "whatever1"},
                    headers={"X-Test-Peer": "127.0.0.1", "X-Forwarded-For": f"198.51.100.{i}"},
                )
            ).status_code
            for i in range(3)
        ]
    assert statuses == [401, 401, 429]

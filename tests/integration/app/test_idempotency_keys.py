"""Idempotency-Key edges found by probing: real concurrency, canonical bodies, long keys,
forgotten keys."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

from app.main import create_app
from app.settings import Settings
from tests.support.live_server import live_server
from tests.support.users import sign_up

TOP_UP = "/v1/wallet/top-ups"


async def balance(client: Any, auth: dict[str, str]) -> int:
    wallet = (await client.get("/v1/wallet?currency=CNY", headers=auth)).json()
    return int(wallet["balance_minor"])


async def test_concurrent_duplicates_over_many_connections_move_money_once(
    settings: Settings,
) -> None:
    with live_server(settings) as url:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            _, auth = await sign_up(client)  # type: ignore[arg-type]
            headers = {**auth, "Idempotency-Key": f"dup-{uuid.uuid4()}"}
            body = {"amount_minor": 700, "currency": "CNY"}
            answers = await asyncio.gather(
                *(client.post(TOP_UP, json=body, headers=headers) for _ in range(20))
            )
            statuses = [a.status_code for a in answers]
            assert set(statuses) <= {201, 409}, statuses
            created = [a for a in answers if a.status_code == 201]
            assert created, "at least the first request is answered"
            assert len({a.content for a in created}) == 1  # replays are byte for byte
            for refused in (a for a in answers if a.status_code == 409):
                assert refused.json()["type"] == "idempotency-request-in-progress"
            assert await balance(client, auth) == 700


async def test_a_retry_sent_the_moment_the_answer_arrives_is_its_replay(
    settings: Settings,
) -> None:
    """The answer is stored before its last byte leaves, so a retry on another connection the
    moment the first answer arrives is its replay (before, 5 of 30 such retries to a busy
    server were 409 in progress)."""
    with live_server(settings) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=30) as first_client,
            httpx.AsyncClient(base_url=url, timeout=30) as retry_client,
        ):
            _, auth = await sign_up(first_client)  # type: ignore[arg-type]
            await retry_client.get("/v1/health")  # its connection open before the first answer
            body = {"amount_minor": 10, "currency": "CNY"}
            for attempt in range(60):
                headers = {**auth, "Idempotency-Key": f"now-{attempt}"}
                first = await first_client.post(TOP_UP, json=body, headers=headers)
                again = await retry_client.post(TOP_UP, json=body, headers=headers)
                assert first.status_code == 201, first.text
                assert (again.status_code, again.content) == (201, first.content), again.text
                assert again.headers["idempotent-replayed"] == "true"
            assert await balance(first_client, auth) == 600


async def test_the_same_body_encoded_differently_is_a_replay(client: AsyncTestClient[Any]) -> None:
    _, auth = await sign_up(client)
    headers = {**auth, "Idempotency-Key": "reordered", "Content-Type": "application/json"}
    first = await client.post(
        TOP_UP, content=b'{"amount_minor": 300, "currency": "CNY"}', headers=headers
    )
    again = await client.post(
        TOP_UP, content=b'{ "currency":"CNY",\n "amount_minor":300 }', headers=headers
    )
    assert first.status_code == 201, first.text
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await balance(client, auth) == 300


async def test_every_accepted_key_length_works_on_every_money_route(
    client: AsyncTestClient[Any],
) -> None:
    _, auth = await sign_up(client)
    for path, amount, key in (
        (TOP_UP, 1_000, "k" * 128),
        ("/v1/wallet/withdrawals", 400, "w" * 128),
    ):
        response = await client.post(
            path,
            json={"amount_minor": amount, "currency": "CNY"},
            headers={**auth, "Idempotency-Key": key},
        )
        assert response.status_code == 201, response.text
    assert await balance(client, auth) == 600


async def test_a_key_used_again_after_it_was_forgotten_is_a_new_request(settings: Settings) -> None:
    now = [datetime(2026, 11, 23, 12, 0, tzinfo=UTC)]
    app = create_app(settings, clock=lambda: now[0])
    async with AsyncTestClient(app=app) as client:
        _, auth = await sign_up(client)
        headers = {**auth, "Idempotency-Key": "monthly-top-up"}
        body = {"amount_minor": 500, "currency": "CNY"}
        first = await client.post(TOP_UP, json=body, headers=headers)
        now[0] += timedelta(hours=25)  # the key's 24 hours are over: it is forgotten
        second = await client.post(TOP_UP, json=body, headers=headers)
        assert first.status_code == second.status_code == 201
        assert "idempotent-replayed" not in second.headers
        assert first.json()["id"] != second.json()["id"]
        assert await balance(client, auth) == 1_000  # it moved money again, once


async def test_a_key_given_twice_is_refused_and_moves_nothing(settings: Settings) -> None:
    """Two Idempotency-Key headers (sent apart: an HTTP client would join them with a comma,
    which the key's character set refuses already): which would a retry repeat? A 422."""
    with live_server(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            _, auth = await sign_up(client)  # type: ignore[arg-type]
            body = b'{"amount_minor": 500, "currency": "CNY"}'
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"POST {TOP_UP} HTTP/1.1\r\nHost: t\r\nAuthorization: {auth['Authorization']}"
                f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Idempotency-Key: d1\r\nIdempotency-Key: d2\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            answer = await reader.read()
            writer.close()
            head, _, problem = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 422"), answer
            assert b'"type":"validation-error"' in problem
            assert b"more than once" in problem
            assert await balance(client, auth) == 0

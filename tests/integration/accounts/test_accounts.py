"""Accounts over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from app.main import create_app
from tests.conftest import PASSWORD, make_settings
from tests.support.users import sign_up, unique_email


async def test_register_login_and_me_round_trip(client: AsyncTestClient[Any]) -> None:
    email = unique_email()
    user_id, _ = await sign_up(client, email=email, roles=["organizer"])

    login = await client.post("/v1/auth/login", json={"email": email.upper(), "password": PASSWORD})
    assert login.status_code == 200
    token = login.json()["token"]

    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    body = me.json()
    assert body["user_id"] == user_id
    assert body["email"] == email
    assert body["display_name"] == "Test User"
    assert body["roles"] == ["member", "organizer"]
    assert body["reputation"]["rating_count"] == 0


async def test_duplicate_email_in_any_case_is_409(client: AsyncTestClient[Any]) -> None:
    email = unique_email()
    await sign_up(client, email=email)
    again = await client.post(
        "/v1/auth/register",
        json={"email": email.upper(), "password": PASSWORD, "display_name": "Other"},
    )
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["type"] == "email-taken"


async def test_wrong_password_and_unknown_email_are_the_same_401(
    client: AsyncTestClient[Any],
) -> None:
    email = unique_email()
    await sign_up(client, email=email)
    wrong = await client.post("/v1/auth/login", json={"email": email, "password": "not-it-at-all"})
    unknown = await client.post(
        "/v1/auth/login", json={"email": unique_email(), "password": PASSWORD}
    )
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.json()["type"] == "invalid-credentials"
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_me_needs_a_valid_token(client: AsyncTestClient[Any]) -> None:
    missing = await client.get("/v1/me")
    forged = await client.get("/v1/me", headers={"Authorization": "Bearer not.a.token"})
    for response in (missing, forged):
        assert response.status_code == 401
        assert response.json()["type"] == "unauthorized"


async def test_admin_role_cannot_be_self_granted(client: AsyncTestClient[Any]) -> None:
    response = await client.post(
        "/v1/auth/register",
        json={
            "email": unique_email(),
            "password": PASSWORD,
            "display_name": "Mallory",
            "roles": ["admin"],
        },
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith("roles")


async def test_login_is_rate_limited_per_email_with_retry_after(
    database_url: str, redis_url: str
) -> None:
    settings = make_settings(database_url, redis_url, login_limit_per_email=3)
    async with AsyncTestClient(app=create_app(settings)) as client:
        email = unique_email()
        await sign_up(client, email=email)
        for _ in range(3):
            bad = await client.post(
                "/v1/auth/login", json={"email": email, "password": "wrongpass"}
            )
            assert bad.status_code == 401
        # Even the right password waits now, from this address (see test_login_limits.py).
        limited = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert limited.status_code == 429
        assert limited.json()["type"] == "rate-limited"
        assert 1 <= int(limited.headers["retry-after"]) <= settings.login_window_s
        # Another email from the same address is not affected by this email's lock.
        other = unique_email()
        await sign_up(client, email=other)
        ok = await client.post("/v1/auth/login", json={"email": other, "password": PASSWORD})
        assert ok.status_code == 200


async def test_login_is_rate_limited_per_client_address(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url, login_limit_per_ip=5)
    async with AsyncTestClient(app=create_app(settings)) as client:
        statuses = [
            (
                await client.post(
                    "/v1/auth/login", json={"email": unique_email(), "password": "whatever1"}
                )
            ).status_code
            for _ in range(7)
        ]
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]


async def test_a_display_name_loses_bidi_control_and_zero_width_characters(
    client: AsyncTestClient[Any],
) -> None:
    """Others are shown the name (on ratings and complaints): "Ada" then a right-to-left
    override would show "exe.png" reversed; a name of zero-width spaces shows nothing."""
    registered = await client.post(
        "/v1/auth/register",
        json={"email": unique_email(), "password": PASSWORD,
              "display_name": " Ada\u202egnp.exe\u0007\u200b 🧑\u200d💻 "},
    )  # fmt: skip
    assert registered.status_code == 201, registered.text
    headers = {"Authorization": f"Bearer {registered.json()['token']}"}
    me = await client.get("/v1/me", headers=headers)
    assert me.json()["display_name"] == "Adagnp.exe 🧑\u200d💻"
    one_line = await client.post(
        "/v1/auth/register",
        json={"email": unique_email(), "password": PASSWORD, "display_name": "Ada\n\tAdmin"},
    )
    assert one_line.status_code == 201, one_line.text
    headers = {"Authorization": f"Bearer {one_line.json()['token']}"}
    assert (await client.get("/v1/me", headers=headers)).json()["display_name"] == "Ada Admin"
    marks_alone = ("\u3164\u034f", "\u180b\u180c", "\ufe00\ufe0f", "\u034f\u17b4", "\u0301")
    for invisible in ("\u200b\u202e", "\u200d", " \u200d\u200b ", "\u3164", "\u2800", *marks_alone):
        blank = await client.post(
            "/v1/auth/register",
            json={"email": unique_email(), "password": PASSWORD, "display_name": invisible},
        )
        assert blank.status_code == 422, (invisible, blank.text)
        assert blank.json()["type"] == "blank-display-name"
        assert blank.json()["errors"] == [
            {"field": "display_name", "message": "no visible characters"}
        ]
    for hidden in ("a\u202e@example.com", "a\u200b@example.com", "a@exam\u2060ple.com"):
        spoofing = await client.post(
            "/v1/auth/register",
            json={"email": hidden, "password": PASSWORD, "display_name": "Ada"},
        )
        assert spoofing.status_code == 422, (hidden, spoofing.text)
        assert spoofing.json()["type"] == "invalid-email"
        assert spoofing.json()["errors"] == [
            {"field": "email", "message": "control or format characters"}
        ]

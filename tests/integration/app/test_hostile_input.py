"""Whatever a client sends, the answer is a 4xx problem document (each of these was a 500)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import PASSWORD
from tests.support.users import assert_problem, sign_up, unique_email

JSON = {"Content-Type": "application/json"}


def _register_body(**fields: Any) -> dict[str, Any]:
    return {"email": unique_email(), "password": PASSWORD, "display_name": "Ada", **fields}


async def test_invalid_utf8_in_a_json_body_is_a_422_problem(client: AsyncTestClient[Any]) -> None:
    raw = b'{"email": "a@example.com", "password": "\xff\xfe\xfd broken", "display_name": "A"}'
    response = await client.post("/v1/auth/register", content=raw, headers=JSON)
    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize(("opener", "depth"), [("[", 20_000), ('{"a":', 10_000)])
async def test_deeply_nested_json_under_the_size_limit_is_a_422_problem(
    client: AsyncTestClient[Any], opener: str, depth: int
) -> None:
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + "1" + closer * depth).encode()
    assert len(raw) < 64 * 1024
    response = await client.post("/v1/auth/register", content=raw, headers=JSON)
    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize(("opener", "depth"), [("[", 20_000), ('{"a":', 10_000)])
async def test_deeply_nested_json_with_an_idempotency_key_is_a_422_problem(
    client: AsyncTestClient[Any], opener: str, depth: int
) -> None:
    _, headers = await sign_up(client)
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + "1" + closer * depth).encode()
    for key in ("deep-1", "deep-1", "deep-2"):  # the replay too
        response = await client.post(
            "/v1/wallet/top-ups",
            content=raw,
            headers={**headers, **JSON, "Idempotency-Key": key},
        )
        assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "ada\u0000@example.com"),
        ("display_name", "Ada\u0000Lovelace"),
        ("display_name", "\u0000"),
        ("password", "correct\u0000horse battery"),
    ],
)
async def test_a_nul_character_in_a_text_field_is_refused_at_the_schema(
    client: AsyncTestClient[Any], field: str, value: str
) -> None:
    response = await client.post("/v1/auth/register", json=_register_body(**{field: value}))
    body = assert_problem(response, 422, "validation-error")
    assert any(e["field"] == field for e in body["errors"]), body


@pytest.mark.parametrize("field", ["email", "password"])
async def test_a_nul_character_in_a_login_is_refused_at_the_schema(
    client: AsyncTestClient[Any], field: str
) -> None:
    body = {"email": unique_email(), "password": PASSWORD, field: "x\u0000y@example.com"}
    assert_problem(await client.post("/v1/auth/login", json=body), 422, "validation-error")


async def test_a_lone_surrogate_in_a_text_field_is_a_422_problem(
    client: AsyncTestClient[Any],
) -> None:
    email = unique_email()
    raw = f'{{"email": "{email}", "password": "{PASSWORD}", "display_name": "A\\ud800"}}'.encode()
    response = await client.post("/v1/auth/register", content=raw, headers=JSON)
    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    "position",
    # Outside the 64-bit range, and what int() reads but the API never writes.
    [str(2**63), str(-(2**63) - 1), str(10**40), "+13", " 13", "1_0", "\u0661\u0663", "013"],
)
async def test_a_cursor_the_api_did_not_make_is_a_422_problem(
    client: AsyncTestClient[Any], position: str
) -> None:
    _, auth = await sign_up(client)
    cursor = base64.urlsafe_b64encode(f"v1:{position}".encode()).decode().rstrip("=")
    response = await client.get(f"/v1/wallet/transactions?cursor={cursor}", headers=auth)
    body = assert_problem(response, 422, "validation-error")
    assert any(e["field"] == "cursor" for e in body["errors"]), body


async def test_a_cursor_with_stray_characters_is_a_422_problem(
    client: AsyncTestClient[Any],
) -> None:
    _, auth = await sign_up(client)
    made = base64.urlsafe_b64encode(b"v1:13").decode().rstrip("=")
    assert (await client.get(f"/v1/wallet/transactions?cursor={made}", headers=auth)).is_success
    for stray in (made + "=", made[:2] + "." + made[2:], made + "==="):
        response = await client.get(f"/v1/wallet/transactions?cursor={stray}", headers=auth)
        assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("amount", ['"100"', "1.0", "1e2", "true", "100.0000"])
async def test_amounts_are_strictly_integers(client: AsyncTestClient[Any], amount: str) -> None:
    _, auth = await sign_up(client)
    raw = f'{{"amount_minor": {amount}, "currency": "CNY"}}'.encode()
    response = await client.post("/v1/wallet/top-ups", content=raw, headers={**auth, **JSON})
    body = assert_problem(response, 422, "validation-error")
    assert any(e["field"] == "amount_minor" for e in body["errors"]), body
    wallet = (await client.get("/v1/wallet?currency=CNY", headers=auth)).json()
    assert wallet["balance_minor"] == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_without_a_json_content_type_is_a_415_problem(
    client: AsyncTestClient[Any], content_type: str | None
) -> None:
    raw = json.dumps(_register_body()).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/v1/auth/register", content=raw, headers=headers)
    assert_problem(response, 415, "unsupported-media-type")


async def test_a_top_up_without_a_json_content_type_is_a_415_problem_and_moves_nothing(
    client: AsyncTestClient[Any],
) -> None:
    _, auth = await sign_up(client)
    raw = b'{"amount_minor": 100, "currency": "CNY"}'
    response = await client.post(
        "/v1/wallet/top-ups", content=raw, headers={**auth, "Content-Type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported-media-type")
    wallet = (await client.get("/v1/wallet?currency=CNY", headers=auth)).json()
    assert wallet["balance_minor"] == 0


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_content_types_are_accepted(
    client: AsyncTestClient[Any], content_type: str
) -> None:
    raw = json.dumps(_register_body()).encode()
    response = await client.post(
        "/v1/auth/register", content=raw, headers={"Content-Type": content_type}
    )
    assert response.status_code == 201, response.text


async def test_a_cny_top_up_lands_in_the_cny_wallet(client: AsyncTestClient[Any]) -> None:
    _, auth = await sign_up(client)
    response = await client.post(
        "/v1/wallet/top-ups", json={"amount_minor": 12_345, "currency": "CNY"}, headers=auth
    )
    assert response.status_code == 201, response.text
    assert response.json()["currency"] == "CNY"
    wallet = (await client.get("/v1/wallet?currency=CNY", headers=auth)).json()
    assert wallet == {
        "currency": "CNY",
        "available_minor": 12_345,
        "held_minor": 0,
        "balance_minor": 12_345,
    }


@pytest.mark.parametrize("code", ["XAU", "XTS", "CLF", "ABC"])
async def test_metals_funds_and_unknown_codes_are_unknown_currencies(
    client: AsyncTestClient[Any], code: str
) -> None:
    _, auth = await sign_up(client)
    response = await client.post(
        "/v1/wallet/top-ups", json={"amount_minor": 100, "currency": code}, headers=auth
    )
    assert_problem(response, 422, "unknown-currency")


async def test_an_email_longer_than_storable_once_lower_cased_is_a_422_problem(
    client: AsyncTestClient[Any],
) -> None:
    # U+0130 lower-cases to two characters: 130 as sent, 255 as stored (the column holds 254).
    too_long = "\u0130" * 125 + "@x.io"
    response = await client.post("/v1/auth/register", json=_register_body(email=too_long))
    body = assert_problem(response, 422, "email-too-long")
    assert body["errors"] == [{"field": "email", "message": "at most 254 characters"}]
    fits = "\u0130" * 124 + "@x.io"
    created = await client.post("/v1/auth/register", json=_register_body(email=fits))
    assert created.status_code == 201, created.text
    login = await client.post("/v1/auth/login", json={"email": fits, "password": PASSWORD})
    assert login.status_code == 200, login.text


async def test_a_query_parameter_given_twice_is_a_422_not_its_last_value(
    client: AsyncTestClient[Any],
) -> None:
    _, headers = await sign_up(client)
    for path in (
        "/v1/pools?status=open&status=failed",
        "/v1/pools?st%61tus=open&status=open",  # the same name, percent-encoded
        "/v1/me/joins?status=active&status=left",
        "/v1/pools?limit=5&limit=6",
    ):
        body = assert_problem(await client.get(path, headers=headers), 422, "validation-error")
        assert "more than once" in body["detail"]
    assert (await client.get("/v1/pools?status=open&limit=5", headers=headers)).status_code == 200


async def test_an_unknown_field_is_a_422_problem_on_every_route(
    client: AsyncTestClient[Any],
) -> None:
    """A typo is refused, not dropped: money routes and sign-up included, as everywhere else."""
    email = unique_email()
    registered = await client.post("/v1/auth/register", json=_register_body(email=email))
    auth = {"Authorization": f"Bearer {registered.json()['token']}"}
    for path, body, headers in (
        ("/v1/auth/register", _register_body(rols=["organizer"]), {}),
        ("/v1/auth/login", {"email": email, "password": PASSWORD, "remember": True}, {}),
        ("/v1/wallet/top-ups", {"amount_minor": 100, "currency": "CNY", "ammount": 1}, auth),
        ("/v1/wallet/withdrawals", {"amount_minor": 100, "currency": "CNY", "\u0000": 1}, auth),
    ):
        response = await client.post(path, json=body, headers=headers)
        problem = assert_problem(response, 422, "validation-error")
        assert "unknown field" in problem["detail"], (path, problem)
    wallet = (await client.get("/v1/wallet?currency=CNY", headers=auth)).json()
    assert wallet["balance_minor"] == 0

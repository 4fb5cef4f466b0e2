"""Whatever a client sends, the answer is a problem detail, never a 500 or a stack trace."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import PASSWORD
from tests.support.users import assert_problem, unique_email


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"email": "x@example.com", "password": ', None),  # malformed JSON
        (b"[1, 2, 3]", None),  # not an object
        (b'{"email": "x@example.com", "display_name": "X"}', "password"),  # missing field
        (b'{"email": "x@example.com", "password": 12345678, "display_name": "X"}', "password"),
        (b'{"email": "x@example.com", "password": "short", "display_name": "X"}', "password"),
        (b'{"email": "not-an-email", "password": "longenough", "display_name": "X"}', "email"),
        (b'{"email": "x@example.com", "password": "longenough", "display_name": ""}', None),
    ],
)
async def test_invalid_bodies_are_422_problems(
    client: AsyncTestClient[Any], raw: bytes, field: str | None
) -> None:
    response = await client.post(
        "/v1/auth/register", content=raw, headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 422, "validation-error")
    if field is not None:
        assert any(e["field"] == field for e in body["errors"]), body


async def test_unknown_route_is_a_404_problem(client: AsyncTestClient[Any]) -> None:
    assert_problem(await client.get("/v1/nothing-here"), 404, "not-found")


async def test_wrong_method_is_a_405_problem(client: AsyncTestClient[Any]) -> None:
    assert_problem(await client.delete("/v1/auth/login"), 405, "method-not-allowed")


async def test_oversized_body_is_refused_with_413(client: AsyncTestClient[Any]) -> None:
    huge = {"email": unique_email(), "password": PASSWORD, "display_name": "x" * 200_000}
    assert_problem(await client.post("/v1/auth/register", json=huge), 413, "request-too-large")


async def test_every_answer_carries_a_request_id(client: AsyncTestClient[Any]) -> None:
    generated = await client.get("/v1/health")
    assert len(generated.headers["x-request-id"]) == 32
    echoed = await client.get("/v1/nothing", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"


async def test_openapi_documents_routes_and_problems(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    login = spec["paths"]["/v1/auth/login"]["post"]
    assert {"401", "422", "429"} <= set(login["responses"])
    assert "/v1/me" in spec["paths"]


async def test_openapi_says_every_request_body_refuses_unknown_fields(
    client: AsyncTestClient[Any],
) -> None:
    """Every request body is 422 with a field it does not know: the document says so, so that
    a generated client is told."""
    spec = (await client.get("/schema/openapi.json")).json()
    components = spec["components"]["schemas"]
    bodies = {
        operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
        for item in spec["paths"].values()
        for operation in item.values()
        if "requestBody" in operation
    }
    assert {"RegisterIn", "LoginIn", "FundingIn", "PoolIn", "OfferIn"} <= bodies
    for body in sorted(bodies):
        assert components[body].get("additionalProperties") is False, body


async def test_openapi_tells_the_truth_about_headers_and_problems(
    client: AsyncTestClient[Any],
) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    operations = {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    for (method, path), operation in operations.items():
        answers = operation["responses"]
        assert "400" not in answers, (method, path)
        for status, answer in answers.items():
            if int(status) >= 400 and path != "/v1/health":
                assert list(answer["content"]) == ["application/problem+json"], (method, path)
        if "requestBody" in operation:
            assert {"413", "415", "422", "503"} <= set(answers), (method, path)
        if operation.get("security") != [{}]:
            assert "401" in answers, (method, path)
    for path in ("/v1/wallet/top-ups", "/v1/wallet/withdrawals"):
        [header] = [
            p for p in operations[("POST", path)]["parameters"] if p["name"] == "Idempotency-Key"
        ]
        assert header["in"] == "header"
        assert not header["required"]
        assert header["schema"]["pattern"] == "^[A-Za-z0-9._:-]{1,128}$"
        assert header["schema"]["maxLength"] == 128
    assert "404" in operations[("GET", "/v1/me")]["responses"]
    assert {"429"} <= set(operations[("POST", "/v1/auth/register")]["responses"])
    [currency] = operations[("GET", "/v1/wallet")]["parameters"]
    assert currency["schema"]["pattern"] == "^[A-Z]{3}$"
    unprocessable = operations[("POST", "/v1/wallet/top-ups")]["responses"]["422"]
    schema_ref = unprocessable["content"]["application/problem+json"]["schema"]["$ref"]
    validation = spec["components"]["schemas"][schema_ref.rpartition("/")[2]]
    field_error = validation["properties"]["errors"]["items"]["$ref"].rpartition("/")[2]
    assert set(spec["components"]["schemas"][field_error]["required"]) == {"field", "message"}


async def test_every_route_that_reads_or_writes_the_database_documents_503(
    client: AsyncTestClient[Any],
) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    for method, path in (
        ("get", "/v1/wallet"),
        ("get", "/v1/wallet/transactions"),
        ("get", "/v1/ledger/head"),
        ("post", "/v1/wallet/top-ups"),
        ("get", "/v1/me"),
    ):
        assert "503" in spec["paths"][path][method]["responses"], (method, path)

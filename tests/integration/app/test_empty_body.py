"""A request without the JSON body its route reads is a 422 that says so."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.support.users import assert_problem

JSON = {"Content-Type": "application/json"}


async def test_an_empty_body_is_a_422_that_asks_for_one(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/v1/auth/register", content=b"", headers=JSON)
    body = assert_problem(response, 422, "validation-error")
    assert body["errors"] == [{"field": "body", "message": "a JSON body is required"}], body

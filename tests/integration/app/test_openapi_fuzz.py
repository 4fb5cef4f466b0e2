"""Schemathesis over the whole OpenAPI document, against a live server on PostgreSQL.

Every operation, with and without a bearer token, valid and invalid input, a bounded and
repeatable number of examples each: no 5xx, every error is a problem document, every answer
matches the documented status codes, content types and schemas.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from payments.money import CURRENCIES
from tests.conftest import PASSWORD, make_settings
from tests.support.live_server import live_server

EXAMPLES_PER_OPERATION = 25
PROBLEM_JSON = "application/problem+json"


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """Any three letters rarely name a currency: often use one copool accepts, so money moves."""
    if not (isinstance(body, dict) and isinstance(body.get("currency"), str)):
        return st.just(body)
    accepted = st.sampled_from(["CNY", "JPY", "BHD", "EUR", *sorted(CURRENCIES)[:5]])
    return st.just(body) | accepted.map(lambda code: {**body, "currency": code})


@schemathesis.check
def errors_are_problem_documents(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx answer is RFC 9457 problem details."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if not content_type.startswith(PROBLEM_JSON):
        raise AssertionError(f"{response.status_code} answered as {content_type!r}")
    body = response.json()
    missing = {"type", "title", "status", "detail"} - set(body)
    if missing or body["status"] != response.status_code:
        raise AssertionError(f"not a problem document: {body}")
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    errors_are_problem_documents,
]


@pytest.fixture
def base_url(postgres_url: str, redis_url: str) -> Iterator[str]:
    with live_server(make_settings(postgres_url, redis_url)) as url:
        yield url


def _token(base_url: str) -> str:
    body = {
        "email": f"fuzz-{uuid.uuid4().hex[:12]}@example.com",
        "password": PASSWORD,
        "display_name": "Fuzz",
    }
    response = httpx.post(f"{base_url}/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def _fuzz(base_url: str, headers: dict[str, str]) -> tuple[int, int]:
    """Run every operation in both generation modes; return (operations, requests sent)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json")
    sent = 0
    operations = 0
    statuses: dict[Any, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                nonlocal sent
                sent += 1
                response = case.call_and_validate(
                    base_url=base_url, headers=headers, checks=CHECKS, timeout=10
                )
                key = (case.operation.label, response.status_code)
                statuses[key] = statuses.get(key, 0) + 1

            try:
                run()
            except Unsatisfiable:
                # Nothing to make invalid: the operation takes no parameters and no body.
                assert mode is GenerationMode.NEGATIVE
    print(f"schemathesis: {operations} operations, {sent} requests: {sorted(statuses.items())}")
    return operations, sent


def test_every_operation_without_a_token_keeps_its_contract(base_url: str) -> None:
    operations, sent = _fuzz(base_url, headers={})
    assert operations >= 9
    assert sent >= operations * 2


def test_every_operation_with_a_token_keeps_its_contract(base_url: str) -> None:
    token = _token(base_url)
    operations, sent = _fuzz(base_url, headers={"Authorization": f"Bearer {token}"})
    assert operations >= 9
    assert sent >= operations * 2

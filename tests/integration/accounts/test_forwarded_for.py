"""X-Forwarded-For counts only when it comes from a trusted proxy."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.auth import client_address
from tests.integration.accounts.serving import serving
from tests.support.users import unique_email

PROXY = ("10.0.0.0/8",)


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", ()) == "203.0.113.9"


def test_a_trusted_proxy_names_the_client_and_what_the_client_wrote_is_ignored() -> None:
    # The client claims 1.2.3.4; the proxy appends the address it really saw.
    assert client_address("10.0.0.2", "1.2.3.4, 198.51.100.7", PROXY) == "198.51.100.7"
    assert client_address("10.0.0.2", "198.51.100.7, 10.0.0.3", PROXY) == "198.51.100.7"
    assert client_address("10.0.0.2", None, PROXY) == "10.0.0.2"


def test_an_untrusted_peer_cannot_speak_for_others() -> None:
    assert client_address("198.51.100.7", "10.0.0.5", PROXY) == "198.51.100.7"


def login_statuses(base_url: str, forwarded_for: list[str]) -> list[int]:
    return [
        httpx.post(
            f"{base_url}/v1/auth/login",
            json={"email": unique_email(), "password": "not-the-password"},
            headers={"X-Forwarded-For": address},
            timeout=10,
        ).status_code
        for address in forwarded_for
    ]


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        ("", [401, 401, 401, 429]),  # default: the header changes nothing
        ("127.0.0.1", [401, 401, 401, 401]),  # behind a proxy: each client counts on its own
    ],
)
def test_under_uvicorn_the_header_changes_the_rate_limit_identity_only_behind_a_trusted_proxy(
    tmp_path: Path, redis_url: str, trusted: str, expected: list[int]
) -> None:
    env = {"COPOOL_REDIS_URL": redis_url, "COPOOL_LOGIN_LIMIT_PER_IP": "3"}
    if trusted:
        env["COPOOL_TRUSTED_PROXIES"] = trusted
    with serving(tmp_path, env) as server:
        statuses = login_statuses(
            server.base_url, ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"]
        )
    assert statuses == expected

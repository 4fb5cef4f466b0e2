"""HEAD is answered as GET without its body, on the wire (RFC 9110: a general-purpose server
supports both); Litestar alone answered HEAD on a GET route with 405."""

from __future__ import annotations

import re
import socket

import httpx

from app.settings import Settings
from tests.support.live_server import live_server
from tests.support.users import sign_up

_LENGTH = re.compile(rb"\r\ncontent-length: (\d+)\r\n", re.IGNORECASE)


def _read_answers(sock: socket.socket, heads: int, bodies: list[bool]) -> list[tuple[bytes, bytes]]:
    """`heads` answers off the socket: (head, body), a body read only where `bodies` says so."""
    buffer, answers = b"", []
    for has_body in bodies[:heads]:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed after {answers}"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        found = _LENGTH.search(head + b"\r\n")
        assert found is not None, head
        length = int(found.group(1)) if has_body else 0
        while len(buffer) < length:
            buffer += sock.recv(65536)
        answers.append((head, buffer[:length]))
        buffer = buffer[length:]
    assert buffer == b"", f"bytes after the last answer: {buffer[:100]!r}"
    return answers


async def test_head_is_get_without_the_body(settings: Settings) -> None:
    with live_server(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            _, auth = await sign_up(client)  # type: ignore[arg-type]
        port = int(url.rsplit(":", 1)[1])
        bearer = auth["Authorization"].encode()
        requests = b"".join(
            b"%s %s HTTP/1.1\r\nHost: t\r\nAuthorization: %s\r\n\r\n" % (method, path, bearer)
            for method, path in (
                (b"HEAD", b"/v1/me"),
                (b"GET", b"/v1/me"),  # pipelined: no body bytes of the HEAD come before it
                (b"HEAD", b"/v1/no-such-thing"),
                (b"HEAD", b"/v1/auth/login"),  # POST only
                (b"GET", b"/v1/me"),
            )
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(requests)
            answers = _read_answers(sock, 5, [False, True, False, False, True])
    (head, _), (got, body), (missing, _), (post_only, _), (again, _) = answers
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert got.startswith(b"HTTP/1.1 200 "), got
    head_length = _LENGTH.search(head + b"\r\n")
    assert head_length is not None
    assert int(head_length.group(1)) == len(body) > 0
    assert b"content-type: application/json" in head.lower()
    assert missing.startswith(b"HTTP/1.1 404 "), missing
    assert post_only.startswith(b"HTTP/1.1 405 "), post_only
    assert again.startswith(b"HTTP/1.1 200 "), again


async def test_allow_names_head_wherever_it_names_get(settings: Settings) -> None:
    """OPTIONS and 405 answers say what the route allows, HEAD included where GET is; OPTIONS
    names every method of a path that a controller serves with several handlers."""
    with live_server(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            answers = {
                (method, path): await client.request(method, path)
                for method, path in (
                    ("OPTIONS", "/v1/pools"),  # POST creates, GET lists
                    ("DELETE", "/v1/pools"),
                    ("OPTIONS", "/v1/me"),
                    ("PUT", "/v1/me"),
                    ("OPTIONS", "/v1/auth/login"),  # POST only
                    ("OPTIONS", "/v1/pools/00000000-0000-4000-8000-000000000000"),  # a parameter
                    ("PUT", "/v1/auth/login"),
                )
            }
    allowed = {
        key: (answer.status_code, answer.headers["allow"]) for key, answer in answers.items()
    }
    assert allowed == {
        ("OPTIONS", "/v1/pools"): (204, "GET, HEAD, OPTIONS, POST"),
        ("DELETE", "/v1/pools"): (405, "GET, HEAD, OPTIONS, POST"),
        ("OPTIONS", "/v1/me"): (204, "GET, HEAD, OPTIONS"),
        ("PUT", "/v1/me"): (405, "GET, HEAD, OPTIONS"),
        ("OPTIONS", "/v1/auth/login"): (204, "OPTIONS, POST"),
        ("OPTIONS", "/v1/pools/00000000-0000-4000-8000-000000000000"): (204, "GET, HEAD, OPTIONS"),
        ("PUT", "/v1/auth/login"): (405, "OPTIONS, POST"),
    }
    assert answers["DELETE", "/v1/pools"].json()["status"] == 405

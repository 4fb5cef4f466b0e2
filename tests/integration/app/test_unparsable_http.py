"""A request that is not HTTP/1.1 is answered with problem details, like every other error
(uvicorn's own answer is plain text), by `copool serve` with one worker or several."""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.accounts.serving import free_port, serving

UNPARSABLE = [
    pytest.param(b"GARBAGE / HTTP/1.1\r\nHost: t\r\n\r\n", id="bad-method"),
    pytest.param(b"GET /v1/health HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", id="length"),
    pytest.param(
        b"GET /v1/health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        id="chunk",
    ),
    pytest.param(b"GET /v1/health HTTP/1.1\r\nHo\x00st: t\r\n\r\n", id="header-name"),
]


#: `copool serve` with one worker, and with several (a socket per worker: Linux only).
WORKERS = [
    "1",
    pytest.param(
        "2",
        marks=pytest.mark.skipif(
            not sys.platform.startswith("linux"), reason="a socket per worker: Linux"
        ),
    ),
]


def _answers(port: int, requests: bytes, count: int) -> bytes:
    """What the server answers to these requests sent at once, once `count` answers came (or
    it closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(requests)
        answer = b""
        while answer.count(b"HTTP/1.1 ") < count or not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection after answering
            answer += chunk
    return answer


@pytest.mark.parametrize("workers", WORKERS)
def test_a_request_that_is_not_http_gets_a_problem_and_a_closed_connection(
    tmp_path: Path, workers: str
) -> None:
    env = {"_COPOOL_LOCAL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with serving(tmp_path, env, "--workers", workers) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        for param in UNPARSABLE:
            (request,) = param.values
            head, _, body = _exchange(port, request).partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            assert lines[0] == b"HTTP/1.1 400 Bad Request", (param.id, head)
            assert b"content-type: application/problem+json" in lines
            assert b"connection: close" in lines
            assert any(line.startswith(b"date: ") for line in lines), head  # as every answer
            problem = json.loads(body)
            assert problem["type"] == "bad-request"
            assert problem["status"] == 400
            assert problem["detail"]
        # A body broken after its headers were read: the app was already reading it.
        cut = _exchange(
            port,
            b"POST /v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        )
        assert cut.startswith(b"HTTP/1.1 400 Bad Request"), cut
        assert b"application/problem+json" in cut
        # Valid requests are served as before.
        healthy = _exchange(
            port, b"GET /v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert healthy.startswith(b"HTTP/1.1 200")
        # Requests before a broken one are answered first, in order; a WebSocket upgrade is a
        # request like any other (no route takes one).
        upgrade = (
            b"GET /v1/health HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket"
            b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        health = b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n"
        for pipelined, statuses in (
            (health + health + b"GARBAGE\r\n\r\n", [b"200", b"200", b"400"]),
            (health + upgrade, [b"200", b"200"]),
        ):
            answers = _answers(port, pipelined, len(statuses))
            assert re.findall(rb"HTTP/1\.1 (\d{3})", answers) == statuses, answers
        returncode, output = server.interrupt()
    assert returncode == 0, output
    assert "Traceback" not in output, output
    # Its access line says it was cut off (499), not the 500 the app answered to nobody.
    logins = [line for line in output.splitlines() if "path=/v1/auth/login" in line]
    assert len(logins) == 1, output
    assert "status=499" in logins[0], logins


def test_a_keyed_request_cut_off_mid_body_leaves_its_key_for_the_retry(tmp_path: Path) -> None:
    env = {"_COPOOL_LOCAL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with serving(tmp_path, env) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        registered = httpx.post(
            f"{server.base_url}/v1/auth/register",
            json={"email": "cut@example.com", "password": "correct horse", "display_name": "C"},
        )
        token = registered.json()["token"]
        body = json.dumps({"amount_minor": 500, "currency": "CNY"}).encode()
        head = (
            f"POST /v1/wallet/top-ups HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nIdempotency-Key: cut-1\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head + body[:10])  # half the body, then the client goes away
        time.sleep(0.5)
        retried = httpx.post(
            f"{server.base_url}/v1/wallet/top-ups",
            content=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": "cut-1",
            },
        )
        assert retried.status_code == 201, retried.text
        wallet = httpx.get(
            f"{server.base_url}/v1/wallet", headers={"Authorization": f"Bearer {token}"}
        )
        assert wallet.json()["balance_minor"] == 500
        server.interrupt()


def _until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


@pytest.mark.parametrize("workers", WORKERS)
def test_slow_senders_cannot_hold_a_connection(tmp_path: Path, workers: str) -> None:
    """A request not whole within the read timeout of its first byte (its head or its body stops
    coming) is answered 408, after the answers before it, and its connection closed; a
    connection that sends nothing is closed; a slow request that is whole in time is served."""
    env = {
        "_COPOOL_LOCAL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "COPOOL_HTTP_READ_TIMEOUT_S": "2",
    }
    with serving(tmp_path, env, "--workers", workers) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        health = b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n"
        login = b"POST /v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as silent,
            socket.create_connection(("127.0.0.1", port), timeout=10) as slow_head,
            socket.create_connection(("127.0.0.1", port), timeout=10) as slow_body,
            socket.create_connection(("127.0.0.1", port), timeout=10) as trickle,
        ):
            started = time.monotonic()
            slow_head.sendall(health + b"GET /v1/health HTTP/1.1\r\nHo")  # one answered first
            slow_body.sendall(login + b'Content-Length: 40\r\n\r\n{"email":')
            for piece in (b"GET /v1/health HTTP/1.1\r\n", b"Host: t\r\n", b"\r\n"):
                time.sleep(0.4)  # slowly, but the whole request within the timeout
                trickle.sendall(piece)
            assert _until_closed(silent) == b""
            head_answers = _until_closed(slow_head)
            body_answer = _until_closed(slow_body)
            assert time.monotonic() - started < 10
            trickled = trickle.recv(65536)
        assert re.findall(rb"HTTP/1\.1 (\d{3})", head_answers) == [b"200", b"408"], head_answers
        for answer in (head_answers, body_answer):
            last = answer[answer.rindex(b"HTTP/1.1 ") :]
            head, _, body = last.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 Request Timeout"), answer
            assert b"connection: close" in head.split(b"\r\n")
            assert json.loads(body)["type"] == "request-timeout"
        assert trickled.startswith(b"HTTP/1.1 200 "), trickled
        returncode, output = server.interrupt()
    assert returncode == 0, output
    assert "Traceback" not in output, output


def test_what_this_server_does_not_speak_is_refused_with_a_problem(tmp_path: Path) -> None:
    """Another HTTP version is 505 and a transfer coding other than chunked 501 (httptools read
    "HTTP/2.0" as 1.1, and a gzip body as if it were plain), after the answers before them; an
    HTTP/1.0 client is never sent 100 Continue (it cannot know it)."""
    env = {"_COPOOL_LOCAL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    health = b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n"
    login = b"POST /v1/auth/login HTTP/%s\r\nHost: t\r\nContent-Type: application/json\r\n"
    with serving(tmp_path, env) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        refused = {
            "version": _exchange(port, health + b"GET /v1/health HTTP/2.0\r\nHost: t\r\n\r\n"),
            "coding": _exchange(
                port,
                health
                + login % b"1.1"
                + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            ),
        }
        expect = _exchange(
            port, login % b"1.0" + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}"
        )
        server.interrupt()
    for kind, (status, problem_type) in {
        "version": (b"505", "http-version-not-supported"),
        "coding": (b"501", "not-implemented"),
    }.items():
        answers = refused[kind]
        assert re.findall(rb"HTTP/1\.1 (\d{3})", answers) == [b"200", status], answers
        head, _, body = answers[answers.rindex(b"HTTP/1.1 ") :].partition(b"\r\n\r\n")
        assert b"connection: close" in head.split(b"\r\n")
        assert json.loads(body)["type"] == problem_type
    assert expect.startswith(b"HTTP/1.1 422 "), expect  # answered, with no 100 before it

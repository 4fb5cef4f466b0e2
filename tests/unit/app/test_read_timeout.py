"""The read timeout of ProblemHTTPProtocol (slow senders), on the protocol itself with a
recording transport: what counts as the client's delay and what does not."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from app.serving import ProblemHTTPProtocol
from tests.unit.app.test_coalescing_transport import Recording

pytest.importorskip("httptools")

TIMEOUT_S = 0.05


class Transport(Recording):
    aborted = False

    def abort(self) -> None:
        self.aborted = True
        self.closed = True


async def app(scope: Any, receive: Any, send: Any) -> None:
    """/slow-reader asks for its body a while after it starts; /no-body answers at once."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow-reader":
        await asyncio.sleep(4 * TIMEOUT_S)
        while (await receive()).get("more_body"):
            pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ProblemHTTPProtocol, "read_timeout_s", TIMEOUT_S)


def _connected() -> tuple[ProblemHTTPProtocol, Transport]:
    config = Config(app, lifespan="off", log_config=None)
    protocol = ProblemHTTPProtocol(config, ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


def _statuses(transport: Transport) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3})", b"".join(transport.writes))


async def test_a_head_that_stops_coming_is_408() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"GET /no-body HTTP/1.1\r\nHo")
    await asyncio.sleep(3 * TIMEOUT_S)
    assert transport.closed
    assert _statuses(transport) == [b"408"]


async def test_a_body_not_asked_for_yet_is_not_late() -> None:
    """Expect: 100-continue: the client waits for the server's 100 before sending the body."""
    protocol, transport = _connected()
    protocol.data_received(
        b"POST /slow-reader HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: 2\r\n\r\n"
    )
    await asyncio.sleep(3 * TIMEOUT_S)  # the app has not asked for the body yet
    assert not transport.closed
    assert _statuses(transport) == []
    await asyncio.sleep(4 * TIMEOUT_S)  # it asked (100 Continue), and the body did not come
    assert transport.closed
    assert _statuses(transport) == [b"100", b"408"]


async def test_the_rest_of_an_answered_requests_body_is_not_awaited() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"POST /no-body HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
    await asyncio.sleep(3 * TIMEOUT_S)
    assert transport.closed
    assert _statuses(transport) == [b"200"]  # no second answer to the one request


async def test_time_the_server_does_not_read_does_not_count() -> None:
    protocol, transport = _connected()
    protocol.flow.pause_reading()  # as when a request waits behind the one before it
    protocol.data_received(b"GET /no-body HTTP/1.1\r\nHo")
    await asyncio.sleep(3 * TIMEOUT_S)
    assert not transport.closed
    protocol.flow.resume_reading()
    await asyncio.sleep(3 * TIMEOUT_S)
    assert _statuses(transport) == [b"408"]


async def test_a_client_that_reads_no_answers_is_dropped() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"GET /no-body HTTP/1.1\r\nHo")
    protocol.flow.pause_reading()
    protocol.pause_writing()  # its answers no longer drain
    await asyncio.sleep(3 * TIMEOUT_S)
    assert transport.aborted

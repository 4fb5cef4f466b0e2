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
        # As asyncio does: the protocol learns the connection is gone (its writers stop waiting).
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)


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
    transport.set_protocol(protocol)
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
    transport.buffered = 100_000
    protocol.pause_writing()  # its answers no longer drain
    await asyncio.sleep(3 * TIMEOUT_S)
    assert transport.aborted


async def test_bytes_after_the_last_answer_do_not_hold_the_connection() -> None:
    """Line breaks after a request, or the end of a body whose request was answered, stopped
    every timer: the connection then stayed open for ever."""
    for late in (b"\r\n", b"ab"):
        protocol, transport = _connected()
        length = b"2" if late == b"ab" else b"0"
        protocol.data_received(
            b"POST /no-body HTTP/1.1\r\nHost: t\r\nContent-Length: %s\r\n\r\n" % length
        )
        await asyncio.sleep(TIMEOUT_S / 5)  # answered
        protocol.data_received(late)
        await asyncio.sleep(3 * TIMEOUT_S)
        assert transport.closed, late
        assert _statuses(transport) == [b"200"]


async def test_a_client_that_reads_no_answers_to_whole_requests_is_dropped() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"GET /no-body HTTP/1.1\r\nHost: t\r\n\r\n")
    transport.buffered = 100_000
    protocol.pause_writing()  # its answers no longer drain, and no request is being read
    await asyncio.sleep(3 * TIMEOUT_S)
    assert transport.aborted


async def test_a_half_closed_client_gets_its_answers() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"GET /no-body HTTP/1.1\r\nHost: t\r\n\r\n" * 2)
    assert protocol.eof_received() is True  # its write side is done: the transport stays open
    for _ in range(100):
        if transport.closed:
            break
        await asyncio.sleep(0.005)
    assert transport.closed  # after the newest answer
    assert _statuses(transport) == [b"200", b"200"]


async def test_a_client_that_stops_mid_request_is_closed_at_its_eof() -> None:
    protocol, _ = _connected()
    protocol.data_received(b"POST /no-body HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nab")
    assert protocol.eof_received() is None  # asyncio closes the transport


@pytest.mark.parametrize(
    "head",
    [
        b"GET /no-body HTTP/1.1\r\n\r\n",  # no host
        b"GET /no-body HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /no-body HTTP/1.1\r\nHost: a b/c@\r\n\r\n",
    ],
    ids=["missing", "twice", "malformed"],
)
async def test_a_request_must_name_one_host(head: bytes) -> None:
    protocol, transport = _connected()
    protocol.data_received(head)
    assert transport.closed
    assert _statuses(transport) == [b"400"]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /no-body HTTP/1.0\r\n\r\n",  # HTTP/1.0 need not name one
        b"GET /no-body HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n",
        b"GET /no-body HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
        b"GET /no-body HTTP/1.1\r\nHost: \r\n\r\n",  # empty: a target with no authority
    ],
)
async def test_hosts_that_are_fine(head: bytes) -> None:
    protocol, transport = _connected()
    protocol.data_received(head)
    for _ in range(100):
        if _statuses(transport):
            break
        await asyncio.sleep(0.005)
    assert _statuses(transport) == [b"200"]


async def test_an_early_answer_to_a_request_expecting_100_ends_the_connection() -> None:
    """Answered before its body was asked for, the client may skip the body: what it sends
    next must not be read as that body."""
    protocol, transport = _connected()
    protocol.data_received(
        b"POST /no-body HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    for _ in range(100):
        if transport.closed:
            break
        await asyncio.sleep(0.005)
    head = b"".join(transport.writes)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head.split(b"\r\n\r\n")[0].split(b"\r\n")


async def test_a_slow_download_is_not_a_stall() -> None:
    """A client that reads its answers slower than they are written is not dropped while it
    makes progress; one that stops reading is, a timeout later."""
    protocol, transport = _connected()
    protocol.data_received(b"GET /no-body HTTP/1.1\r\nHost: t\r\n\r\n")
    transport.buffered = 100_000
    protocol.pause_writing()
    for _ in range(16):  # it reads a little, several times between the timer's looks
        await asyncio.sleep(TIMEOUT_S / 4)
        transport.buffered -= 5_000
        assert not transport.aborted
    await asyncio.sleep(3 * TIMEOUT_S)  # then nothing
    assert transport.aborted


async def test_an_answer_finished_as_the_client_half_closes_is_sent() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"GET /no-body HTTP/1.1\r\nHost: t\r\n\r\n")
    for _ in range(100):  # answered, the answer still in the coalescing buffer or just out
        if protocol.cycle is not None and protocol.cycle.response_complete:
            break
        await asyncio.sleep(0)
    assert protocol.eof_received() is None  # nothing left to answer: asyncio closes
    assert _statuses(transport) == [b"200"]


async def test_a_refusal_waiting_its_turn_is_sent_after_a_half_close() -> None:
    protocol, transport = _connected()
    protocol.data_received(
        b"GET /slow-reader HTTP/1.1\r\nHost: t\r\n\r\nGET /no-body HTTP/1.1\r\nHost: a b\r\n\r\n"
    )
    assert protocol.eof_received() is True
    await asyncio.sleep(6 * TIMEOUT_S)
    assert transport.closed
    assert _statuses(transport) == [b"200", b"400"]


async def test_a_request_expecting_100_whose_body_came_whole_keeps_its_connection() -> None:
    protocol, transport = _connected()
    protocol.data_received(
        b"POST /slow-reader HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: 2\r\n\r\nab"  # sent without waiting for the 100, as it may
    )
    await asyncio.sleep(6 * TIMEOUT_S)
    answers = b"".join(transport.writes)
    assert _statuses(transport) == [b"100", b"200"]  # (uvicorn still says 100)
    assert b"connection: close" not in answers.lower()
    assert not transport.closed

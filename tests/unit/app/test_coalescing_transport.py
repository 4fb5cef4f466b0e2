"""`copool serve` writes each answer's head and body in one write (app/serving.py): uvicorn
writes them apart, two system calls and two TCP segments, the client woken twice."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from litestar import Litestar, get, post
from litestar.params import JSONBody
from uvicorn.config import Config
from uvicorn.server import ServerState

from app.serving import (
    LARGE_WRITE,
    MAX_HEAD_BYTES,
    MAX_URL_BYTES,
    CoalescingTransport,
    ProblemHTTPProtocol,
)

pytest.importorskip("httptools")


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.buffered = 0  # bytes written but not yet taken by the peer

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


@get("/hello", sync_to_thread=False)
def hello() -> dict[str, str]:
    return {"hello": "world"}


@post("/echo", sync_to_thread=False)
def echo(data: JSONBody[dict[str, int]]) -> dict[str, int]:
    return data


def _connected(ws: str = "auto") -> tuple[ProblemHTTPProtocol, Recording]:
    config = Config(Litestar([hello, echo]), lifespan="off", log_config=None, ws=ws)  # type: ignore[arg-type]
    protocol = ProblemHTTPProtocol(config, ServerState(), app_state={})
    transport = Recording()
    protocol.connection_made(transport)
    return protocol, transport


async def _served(*requests: bytes, answers: int) -> Recording:
    protocol, transport = _connected()
    for request in requests:
        protocol.data_received(request)
    for _ in range(200):
        if sum(w.count(b"HTTP/1.1 ") for w in transport.writes) >= answers:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.01)  # nothing more comes
    protocol.connection_lost(None)
    return transport


async def test_an_answers_head_and_body_go_out_in_one_write() -> None:
    transport = await _served(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", answers=1)
    assert len(transport.writes) == 1, transport.writes
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == b'{"hello":"world"}'


async def test_keep_alive_answers_go_out_in_order_one_write_each() -> None:
    first = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
    second = b'POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{"n": 7}'
    transport = await _served(first, second, answers=2)
    assert len(transport.writes) == 2, transport.writes
    assert transport.writes[0].endswith(b'{"hello":"world"}')
    assert transport.writes[1].startswith(b"HTTP/1.1 201 Created")
    assert transport.writes[1].endswith(b'{"n":7}')


async def test_a_close_sends_what_is_pending_first() -> None:
    loop = asyncio.get_running_loop()
    transport = Recording()
    coalescing = CoalescingTransport(transport, loop)
    coalescing.write(b"head ")
    coalescing.write(b"body")
    assert transport.writes == []
    coalescing.close()
    assert transport.writes == [b"head body"]
    assert transport.closed
    assert coalescing.is_closing()
    coalescing.write(b"late")
    await asyncio.sleep(0)
    assert transport.writes == [b"head body"]  # nothing is written to a closed transport


async def test_a_graceful_shutdown_sends_an_answer_finished_in_the_same_turn() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
    for _ in range(1_000):
        if protocol.cycle.response_complete:
            break
        await asyncio.sleep(0)
    protocol.shutdown()  # what uvicorn's Server.shutdown calls on every connection
    await asyncio.sleep(0.01)
    assert transport.closed
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b'{"hello":"world"}')


async def test_a_websocket_upgrade_is_left_to_uvicorn() -> None:
    protocol, transport = _connected()
    protocol.data_received(
        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    await asyncio.sleep(0.05)
    assert not any(w.startswith(b"HTTP/1.1 400") for w in transport.writes), transport.writes


async def test_a_large_write_goes_out_at_once_after_what_is_pending() -> None:
    transport = Recording()
    coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
    coalescing.write(b"head")
    big = b"x" * LARGE_WRITE
    coalescing.write(big)
    assert transport.writes == [b"head", big]
    await asyncio.sleep(0)
    assert transport.writes == [b"head", big]


async def test_a_broken_request_is_refused_after_the_answers_of_those_before_it() -> None:
    protocol, transport = _connected()
    protocol.data_received(
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        b'POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{"n": 7}'
        b"GARBAGE\r\n\r\n"
    )
    for _ in range(200):
        if transport.closed:
            break
        await asyncio.sleep(0.005)
    answers = b"".join(transport.writes)
    assert transport.closed
    heads = re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+", answers)
    assert heads == [b"HTTP/1.1 200 OK", b"HTTP/1.1 201 Created", b"HTTP/1.1 400 Bad Request"]
    assert answers.startswith(b"HTTP/1.1 200 OK")
    assert answers.endswith(b"}")
    assert b"application/problem+json" in answers
    protocol.data_received(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")  # read no more
    await asyncio.sleep(0.01)
    assert b"".join(transport.writes) == answers


async def test_a_request_whose_body_breaks_is_refused_at_once() -> None:
    protocol, transport = _connected()
    protocol.data_received(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    await asyncio.sleep(0.01)
    assert transport.closed
    assert transport.writes[-1].startswith(b"HTTP/1.1 400 Bad Request")


async def test_a_head_over_the_limit_is_refused_with_431() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: ")
    chunk = b"a" * (256 * 1024)
    for _ in range(MAX_HEAD_BYTES // len(chunk) + 1):
        protocol.data_received(chunk)
    assert transport.closed
    head, _, body = transport.writes[-1].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    assert b"content-type: application/problem+json" in head
    assert b'"status":431' in body


@pytest.mark.parametrize(
    ("head", "status"),
    [
        # Just over the limit, its last read completing it (data_received's count of reads
        # with the head still open missed that one).
        (b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", 431),
        (b"GET /hello HTTP/1.1\r\nHost: t\r\n" + b"X-Many: 0123456789\r\n" * 60_000 + b"\r\n", 431),
        (b"GET /hello?q=" + b"a" * MAX_URL_BYTES + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    ],
    ids=["one-header", "many-headers", "url"],
)
async def test_a_head_too_large_is_refused_in_the_read_that_completes_it(
    head: bytes, status: int
) -> None:
    protocol, transport = _connected()
    read = 256 * 1024  # the most one socket read gives
    for start in range(0, len(head), read):
        protocol.data_received(head[start : start + read])
    assert transport.closed
    answer, _, body = transport.writes[-1].partition(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:40]
    assert b'"status":%d' % status in body


async def test_a_head_just_under_the_limit_is_served() -> None:
    filler = b"a" * (MAX_HEAD_BYTES - 1000)
    transport = await _served(
        b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + filler + b"\r\n\r\n", answers=1
    )
    assert b"".join(transport.writes).startswith(b"HTTP/1.1 200 ")


async def _until_closed(transport: Recording) -> list[bytes]:
    for _ in range(200):
        if transport.closed:
            break
        await asyncio.sleep(0.005)
    return re.findall(rb"HTTP/1\.1 \d{3}", b"".join(transport.writes))


async def test_a_queued_request_whose_body_breaks_is_refused_after_the_one_before() -> None:
    protocol, transport = _connected()
    protocol.data_received(
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    assert await _until_closed(transport) == [b"HTTP/1.1 200", b"HTTP/1.1 400"]


async def test_an_upgrade_request_served_as_http_ends_its_connection() -> None:
    protocol, transport = _connected(ws="none")  # as `copool serve` runs it
    protocol.data_received(
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"  # (httptools reads nothing after it)
    )
    assert await _until_closed(transport) == [b"HTTP/1.1 200", b"HTTP/1.1 200"]
    assert transport.closed
    assert b"connection: close" in transport.writes[-1]


@pytest.mark.parametrize(
    ("codings", "status"),
    [
        (b"gzip, chunked", b"501"),  # a coding this server does not decode
        (b"chunked\r\nTransfer-Encoding: gzip", b"400"),  # chunked not last: length unknown
        (b"gzip", b"400"),
        (b" Chunked ", b"201"),  # served (echo creates)
    ],
)
async def test_transfer_codings_other_than_chunked_are_refused(
    codings: bytes, status: bytes
) -> None:
    protocol, transport = _connected()
    protocol.data_received(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: %s\r\n\r\n8\r\n{"n": 7}\r\n0\r\n\r\n' % codings
    )
    for _ in range(200):
        if b"".join(transport.writes).count(b"HTTP/1.1 "):
            break
        await asyncio.sleep(0.005)
    assert re.findall(rb"HTTP/1\.1 (\d{3})", b"".join(transport.writes)) == [status]

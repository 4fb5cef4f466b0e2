"""Several web worker processes, each listening on its own socket (Linux SO_REUSEPORT).

uvicorn's `--workers` shares one listening socket: every worker is woken for each new connection
and asyncio accepts as many as are waiting, so a burst of connections (a flash crowd opening
the app at once) can leave one worker with twice the other's keep-alive connections, and all of
their requests, for as long as they stay open. With a socket per worker bound to the same port
with SO_REUSEPORT, the kernel spreads new connections evenly over the workers by their
addresses. Each worker is a plain `uvicorn.Server` on its socket; this parent starts them,
passes a stop signal on as SIGTERM (each shuts down gracefully, its lifespan included), and
ends when they have: if a worker dies on its own, it stops the others and exits non-zero, for
whatever supervises the service to restart it whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import msgspec
import structlog

log = structlog.get_logger("copool.serve")

#: How long the workers get to finish their requests and lifespans after a stop signal, all
#: together; uvicorn's wait for open requests is cut shorter, so that the lifespan fits.
STOP_TIMEOUT_S = 30.0
GRACEFUL_SHUTDOWN_S = 20
#: How often the parent looks at its workers and at a stop signal.
POLL_S = 0.1
#: After Ctrl+C, how long before the workers are sent SIGTERM (if the SIGINT missed them).
INTERRUPT_GRACE_S = 0.5


def reuse_port_supported() -> bool:
    """Whether the kernel balances connections over SO_REUSEPORT sockets (Linux does)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def bind_reuse_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) that other SO_REUSEPORT sockets of this user share."""
    return _bind(host, port, reuse_port=True)


def _end_with_parent() -> None:
    """SIGTERM this worker (a graceful shutdown) once its parent is gone, however it went (a
    SIGKILL included): no worker outlives the service and keeps its port."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="copool-parent-watch", daemon=True).start()


def _serve_worker(options: dict[str, Any], host: str, port: int) -> None:
    """One worker process: uvicorn on a socket of its own."""
    import uvicorn

    _end_with_parent()
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        **options,
    )
    # uvicorn raises the stop signal again once it has shut down: Ctrl+C's KeyboardInterrupt
    # is the end that was asked for.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[bind_reuse_port(host, port)])


def run_workers(options: dict[str, Any], *, host: str, port: int, workers: int) -> int:
    """Serve with `workers` processes until a stop signal (0) or a worker's death (1).

    `options`: uvicorn.Config's keyword arguments besides the app, host and port. The port is
    bound once here first, so that a port taken by another program fails before any worker
    starts."""
    # Without SO_REUSEPORT: this bind fails if anything listens on the port, another copool's
    # workers included (theirs would share it).
    _bind(host, port, reuse_port=False).close()
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = [
        context.Process(
            target=_serve_worker, args=(options, host, port), name=f"copool-web-{index}"
        )
        for index in range(workers)
    ]
    stop: list[tuple[int, float]] = []  # the stop signal and when it came

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stop:
            stop.append((signum, time.monotonic()))

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            for process in processes:
                process.start()
        except BaseException:
            _stop_all([process for process in processes if process.pid is not None])
            raise
        log.info("web workers started", workers=workers, host=host, port=port)
        while True:
            wait([process.sentinel for process in processes], timeout=POLL_S)
            if stop:
                signum, at = stop[0]
                # Ctrl+C reaches the workers too (one process group): SIGTERM follows only
                # after it, as uvicorn takes a second SIGINT, or a SIGINT after a SIGTERM, as
                # "stop now" (its lifespan's shutdown skipped).
                if signum == signal.SIGTERM or time.monotonic() - at >= INTERRUPT_GRACE_S:
                    _stop_all(processes)
                    return 0
            elif any(not process.is_alive() for process in processes):
                log.error(
                    "a web worker ended by itself; stopping the others",
                    exitcodes=[process.exitcode for process in processes],
                )
                _stop_all(processes)
                return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_all(processes: list[BaseProcess]) -> None:
    """SIGTERM to every live worker (uvicorn's graceful shutdown), then wait for them."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    _join_all(processes)


def _join_all(processes: list[BaseProcess]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.warning("a web worker did not stop in time; killing it", pid=process.pid)
            process.kill()
            process.join()


def _problem(type_: str, title: str, status: int, detail: str) -> bytes:
    return msgspec.json.encode({"type": type_, "title": title, "status": status, "detail": detail})


#: What a request that is not HTTP at all is answered (uvicorn's own answer is plain text).
_UNPARSABLE = _problem(
    "bad-request",
    "Bad Request",
    400,
    "the request is not valid HTTP/1.1 (its request line, headers or body framing)",
)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HTTPProtocol
except ImportError:  # httptools is not installed: uvicorn's pure-Python h11 protocol
    from uvicorn.protocols.http.h11_impl import H11Protocol as _HTTPProtocol  # type: ignore[assignment]


#: A write at least this large goes out at once, after what is pending (the transport's flow
#: control sees it in time, and it is not copied again).
LARGE_WRITE = 64 * 1024


class CoalescingTransport:
    """A connection's transport as its requests' response cycles see it: what they write in
    one turn of the event loop goes out in one write, in order, before any close.

    uvicorn writes a response's head and its body separately, each a system call and a TCP
    segment of its own (the socket has TCP_NODELAY), so the client wakes twice for every
    answer. Here the head waits for the body, which the app sends in the same turn."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if len(data) >= LARGE_WRITE:  # (a big chunk gains nothing from waiting: flow control)
            self.flush()
            self._send(data)
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending = []
            self._send(data)

    def _send(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


#: A request's head (its request line and headers) may take at most this many bytes, counted
#: over the reads that arrive while it is incomplete (a read is at most 256 KiB): httptools
#: puts no bound on a header, and its time grew with the square of one (150 MB: 25 s, the
#: worker's every other request waiting).
MAX_HEAD_BYTES = 1024 * 1024

_HEAD_TOO_LARGE = _problem(
    "request-too-large",
    "Request Header Fields Too Large",
    431,
    f"the request line and headers may take at most {MAX_HEAD_BYTES} bytes",
)

_READ_TIMED_OUT = _problem(
    "request-timeout",
    "Request Timeout",
    408,
    "the request did not arrive in time: its head, or its body, stopped coming",
)

#: httptools reads no longer URL (its parts are 16-bit offsets).
MAX_URL_BYTES = 65535
_URL_TOO_LONG = _problem(
    "uri-too-long",
    "URI Too Long",
    414,
    f"the path and query may take at most {MAX_URL_BYTES} bytes",
)
#: A Host header: a name, an IPv4 or [IPv6] address, and a port (RFC 3986 reg-name characters,
#: but for the comma, which would let one header name two hosts).
_HOST = re.compile(rb"[A-Za-z0-9._~!$&'()*+;=%-]*(:[0-9]*)?|\[[0-9A-Fa-f:.]+\](:[0-9]*)?")
_BAD_HOST = _problem(
    "bad-request",
    "Bad Request",
    400,
    "an HTTP/1.1 request names one host in one Host header (RFC 9112 3.2)",
)
_VERSION_NOT_SUPPORTED = _problem(
    "http-version-not-supported",
    "HTTP Version Not Supported",
    505,
    "this server speaks HTTP versions 1.1 and 1.0",
)
_CODING_NOT_IMPLEMENTED = _problem(
    "not-implemented", "Not Implemented", 501, "the only transfer coding served is chunked"
)


class _Refused(Exception):
    """Raised in a parser callback, to stop reading a connection whose request is refused."""


class ProblemHTTPProtocol(_HTTPProtocol):
    """uvicorn's HTTP/1.1 protocol, answering a request it cannot parse with problem details
    like every other error (uvicorn's own answer is plain text), then closing the connection,
    but only once the requests before it on the connection have been answered, in order (uvicorn
    answered the 400 at once, in place of theirs, although they ran); refusing a request head
    over MAX_HEAD_BYTES (431); with httptools, its responses go out through a
    CoalescingTransport, and whatever closes the connection itself (a graceful shutdown, the
    keep-alive timeout, a 400) sends what is pending first.

    A client must send its request in time (uvicorn waits for ever): a new connection that
    sends nothing for `read_timeout_s` is closed, and a request (head and body) not whole within
    that time of its first byte is answered 408 and its connection closed, so that slow senders
    cannot hold the server's connections (slowloris). Time the server itself stops reading (a
    request waiting behind the one before it) does not count."""

    #: Set from COPOOL_HTTP_READ_TIMEOUT_S by app.main.create_app, in each worker process.
    read_timeout_s: float = 30.0
    _read_timer: asyncio.TimerHandle | None = None
    _requests_begun = 0

    _coalescing: CoalescingTransport
    #: The request whose app runs (or last ran) on this connection.
    _running: Any = None
    #: The refusal to send once the requests before it are answered (status, reason, body).
    _refusal: tuple[int, bytes, bytes] | None = None
    _head_open = False
    _head_bytes = 0
    #: A request's head or body is being read.
    _message_open = False
    #: The request expecting 100 Continue whose body is awaited, and its keep-alive.
    _expecting: tuple[Any, bool] | None = None
    #: The write buffer's size when the read timer was armed (progress is its shrinking).
    _buffered_at_arm = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._coalescing = CoalescingTransport(transport, self.loop)
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_timer()
        super().connection_lost(exc)

    def _arm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_timed_out)
        self._buffered_at_arm = self.transport.get_write_buffer_size()

    def _disarm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        buffered = self.transport.get_write_buffer_size()
        if buffered:  # answers the client has yet to read
            if buffered >= self._buffered_at_arm:
                self.transport.abort()  # it read nothing of them meanwhile: nothing reaches it
            else:
                self._arm_read_timer()  # it reads them, slowly: a long download is no stall
            return
        if self.transport.is_closing():
            return
        if self._refusal is not None:
            return  # answered once the requests before it are
        if self._requests_begun == 0:
            self.transport.close()  # a connection that never sent a byte: nothing to answer
            return
        if self._message_open:
            cycle = None if self._head_open else self.cycle  # the request whose body is awaited
            if cycle is not None and cycle.response_complete:
                self.transport.close()  # answered already: the rest of its body is not wanted
            elif self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
                # The server is not reading, or has not asked for the body yet: not the
                # client's delay.
                self._arm_read_timer()
            else:
                self._refuse(408, b"Request Timeout", _READ_TIMED_OUT)
        elif not self._answering():
            self._coalescing.flush()
            self.transport.close()  # idle, though bytes came after its last request

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open, self._head_bytes, self._message_open = True, 0, True
        self._requests_begun += 1
        self._arm_read_timer()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._message_open = False
        expecting, self._expecting = self._expecting, None
        if expecting is not None and expecting[0] is self.cycle and not self.cycle.response_started:
            self.cycle.keep_alive = expecting[1]  # its body came whole before any answer
        if self.flow.write_paused:
            self._arm_read_timer()  # its answers are not being read
        else:
            self._disarm_read_timer()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._read_timer is None:
            self._arm_read_timer()  # a client that stops reading its answers is dropped

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """A client that has sent its last request (half-closed) still gets its answers: the
        connection closes after the newest one (or after a refusal waiting its turn). One
        that stopped mid-request is closed now, after what is answered already."""
        if self._refusal is not None and self._answering():
            return True  # the refusal closes the connection once the answers before it are out
        if self._message_open or not self._answering() or self.cycle is None:
            self._coalescing.flush()  # an answer finished this turn goes before the close
            return None
        self.cycle.keep_alive = False
        return True

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._refuse(414, b"URI Too Long", _URL_TOO_LONG)
            raise _Refused  # stops the parser: nothing after this is read

    def on_headers_complete(self) -> None:
        self._head_open = False
        version = self.parser.get_http_version()
        refusal = self._unsupported(version)
        if refusal is not None:
            self._refuse(*refusal)
            raise _Refused  # stops the parser: nothing after this head is read
        if self.expect_100_continue and version == "1.0":
            self.expect_100_continue = False  # RFC 9110 10.1.1: HTTP/1.0 knows no 100
        before = self.cycle
        super().on_headers_complete()  # (httptools calls it; h11 has no such step)
        if self.cycle is None or self.cycle is before:
            return  # an upgrade uvicorn takes: no response cycle of ours
        if self.expect_100_continue:
            # Answered before its body was asked for (a 401, say), the client may send its next
            # request instead of the body: its connection ends with its answer, unless the
            # body came whole first.
            self._expecting = (self.cycle, self.cycle.keep_alive)
            self.cycle.keep_alive = False
        if self.parser.should_upgrade():
            # Served as plain HTTP (no WebSocket routes: `ws` is "none"), but httptools reads
            # nothing after it: the connection ends with its answer, as that answer says.
            self.cycle.keep_alive = False
        self.cycle.transport = self._coalescing  # type: ignore[assignment]

    def _unsupported(self, version: str) -> tuple[int, bytes, bytes] | None:
        """The refusal of a head this server cannot serve: an HTTP version other than 1.0 and
        1.1 (httptools parses "HTTP/2.0" like 1.1), or a transfer coding other than chunked
        (the body would be read as if it were not compressed; 400 where chunked is not the
        last coding, as the body's length is then unknown), or a head over MAX_HEAD_BYTES."""
        if version not in ("1.0", "1.1"):
            return 505, b"HTTP Version Not Supported", _VERSION_NOT_SUPPORTED
        if self._head_bytes and self._head_size() > MAX_HEAD_BYTES:
            # A head over several reads (a read is at most 256 KiB) that data_received's count
            # missed: the read that completed it is not counted there.
            return 431, b"Request Header Fields Too Large", _HEAD_TOO_LARGE
        hosts = [value for name, value in self.headers if name == b"host"]
        if len(hosts) > 1 or not all(_HOST.fullmatch(host) for host in hosts):
            return 400, b"Bad Request", _BAD_HOST
        if not hosts and version == "1.1":
            return 400, b"Bad Request", _BAD_HOST  # RFC 9112 3.2: HTTP/1.1 names its host
        codings = [
            coding.strip()
            for name, value in self.headers
            if name == b"transfer-encoding"
            for coding in value.lower().split(b",")
        ]
        if codings and codings[-1] != b"chunked":
            return 400, b"Bad Request", _UNPARSABLE  # RFC 9112 6.3: its length is unknown
        if len(codings) > 1:
            return 501, b"Not Implemented", _CODING_NOT_IMPLEMENTED
        return None

    def _head_size(self) -> int:
        """The head's size as parsed: its request line (near enough) and header lines."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self._running = cycle  # (`self.cycle` is the newest request, maybe still queued)
        super()._start_asgi_task(cycle, app)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # the rest of the connection is not read: it is refused once answered
        super().data_received(data)  # (which stops uvicorn's keep-alive timer)
        if (
            self._read_timer is None
            and self.timeout_keep_alive_task is None
            and not self._answering()
            and not self.transport.is_closing()
        ):
            # Bytes that began no request (line breaks between requests), or the end of a body
            # whose request was answered: idle again, and timed as such.
            self._arm_read_timer()
        if self._head_open and self._refusal is None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, b"Request Header Fields Too Large", _HEAD_TOO_LARGE)

    def _answering(self) -> bool:
        """Whether a request before the refusal is still running or waiting its turn."""
        running = self._running
        return bool(self.pipeline) or (running is not None and not running.response_complete)

    def _refuse(self, status: int, reason: bytes, body: bytes) -> None:
        self._refusal = (status, reason, body)
        # A request whose body the error broke is the one refused: queued, it must not run;
        # running, it would wait for the rest of its body for ever (its answer is the refusal).
        if self.pipeline and self.pipeline[0][0].more_body:
            self.pipeline.popleft()
        running = self._running
        broken_running = running is not None and running.more_body
        if broken_running or not self._answering():
            self._send_refusal()

    def _send_refusal(self) -> None:
        assert self._refusal is not None
        status, reason, body = self._refusal
        self._coalescing.flush()  # what earlier requests were answered goes first
        running = self._running
        if running is not None and running.response_started and not running.response_complete:
            self.transport.close()  # mid-answer: a status line now would corrupt it
            return
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]  # with uvicorn's date and server
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/problem+json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is not None and not self._answering() and not self.transport.is_closing():
            self._send_refusal()

    def shutdown(self) -> None:
        self._coalescing.flush()  # an answer finished in this turn is not dropped by the close
        super().shutdown()

    def timeout_keep_alive_handler(self) -> None:
        self._coalescing.flush()
        super().timeout_keep_alive_handler()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            self._refuse(400, b"Bad Request", _UNPARSABLE)

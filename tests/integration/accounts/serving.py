"""Run `copool serve` as a real process for tests that need uvicorn itself (signals, proxies)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import TEST_SECRET
from tests.support.ledger import COPOOL
from tests.support.services import sqlite_url

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[str]
    base_url: str

    def interrupt(self, timeout_s: float = 30.0) -> tuple[int, str]:
        """Ctrl+C as a terminal sends it (to the whole process group); the exit code and output."""
        os.killpg(self.process.pid, signal.SIGINT)
        output, _ = self.process.communicate(timeout=timeout_s)
        return self.process.returncode, output


def server_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment of a `copool serve` on a fresh SQLite database in `tmp_path`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("COPOOL_")}
    base.update(
        COPOOL_DATABASE_URL=sqlite_url(str(tmp_path)),
        COPOOL_SECRET_KEY=TEST_SECRET,
        COPOOL_ENV="dev",
        COPOOL_LOG_LEVEL="INFO",
    )
    return {**base, **env}


@contextlib.contextmanager
def serving(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[Server]:
    """`copool serve` (and `args`) on a free port with a fresh SQLite database, until healthy;
    killed after."""
    port = free_port()
    process = subprocess.Popen(
        [COPOOL, "serve", "--port", str(port), *args],
        env=server_env(tmp_path, env),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a shell job
    )
    server = Server(process=process, base_url=f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"copool serve exited early:\n{process.communicate()[0]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.base_url}/v1/health", timeout=1).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("copool serve did not become healthy")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=10)

"""`copool serve --workers 2` (Linux): each worker listens on a socket of its own
(SO_REUSEPORT), so a burst of connections is spread over both; a stop signal stops them all in
order; a worker that dies stops the service (non-zero), for its supervisor to restart it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.accounts.serving import Server, free_port, server_env, serving
from tests.support.ledger import COPOOL

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads connections on Linux"
)

CONNECTIONS = 100


def _private_redis() -> dict[str, str]:
    """No Redis where copool looks for one: it starts its own, shared by its workers (no job
    left in a shared Redis by other tests runs here)."""
    return {"_COPOOL_LOCAL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
    return children


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def _tcp(port: int, state: str) -> list[tuple[str, str]]:
    """(remote address, inode) of this machine's IPv4 sockets on local `port` in `state`
    (0A: listening, 01: established)."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            rows.append((fields[2], fields[9]))
    return rows


def _workers(server: Server) -> list[int]:
    port = int(server.base_url.rsplit(":", 1)[1])
    listening = {inode for _, inode in _tcp(port, "0A")}
    return [pid for pid in _children(server.process.pid) if _socket_inodes(pid) & listening]


def _wait_for(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_each_worker_listens_on_its_own_socket_and_takes_its_share_of_a_burst(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, _private_redis(), "--workers", "2") as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        _wait_for(lambda: len(_workers(server)) == 2)
        workers = _workers(server)
        listening = [inode for _, inode in _tcp(port, "0A")]
        assert len(set(listening)) == 2, "a listening socket per worker"
        for pid in workers:
            assert len(_socket_inodes(pid) & set(listening)) == 1

        burst = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
        try:
            for sock in burst:
                sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: test\r\n\r\n")
            for sock in burst:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            held = Counter()
            accepted = {inode for _, inode in _tcp(port, "01")}
            for pid in workers:
                held[pid] = len(_socket_inodes(pid) & accepted)
            assert sum(held.values()) == CONNECTIONS
            # Spread by a hash of the addresses: 50 each on average, a standard deviation of 5.
            assert min(held.values()) >= CONNECTIONS // 4, held
        finally:
            for sock in burst:
                sock.close()
        returncode, output = server.interrupt()
    assert returncode == 0, output
    assert "Traceback" not in output, output
    assert output.count("Application shutdown complete") == 2, output


def test_a_stop_signal_to_the_service_stops_every_worker(tmp_path: Path) -> None:
    with serving(tmp_path, _private_redis(), "--workers", "2") as server:
        _wait_for(lambda: len(_workers(server)) == 2)
        workers = _workers(server)
        server.process.send_signal(signal.SIGTERM)  # the parent alone, as a supervisor does
        output, _ = server.process.communicate(timeout=60)
    assert server.process.returncode == 0, output
    assert output.count("Application shutdown complete") == 2, output
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_a_worker_that_dies_stops_the_service_with_an_error(tmp_path: Path) -> None:
    with serving(tmp_path, _private_redis(), "--workers", "2") as server:
        _wait_for(lambda: len(_workers(server)) == 2)
        first, second = _workers(server)
        os.kill(first, signal.SIGKILL)
        output, _ = server.process.communicate(timeout=60)
    assert server.process.returncode == 1, output
    assert "a web worker ended by itself" in output
    assert not Path(f"/proc/{second}").exists()


def test_a_second_service_on_the_same_port_is_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "first", _private_redis(), "--workers", "2") as server:
        port = server.base_url.rsplit(":", 1)[1]
        second = subprocess.run(
            [COPOOL, "serve", "--port", port, "--workers", "2"],
            env=server_env(tmp_path / "second", _private_redis()),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr
        assert len(_workers(server)) == 2


def test_workers_and_the_embedded_redis_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    with serving(tmp_path, _private_redis(), "--workers", "2") as server:
        _wait_for(lambda: len(_workers(server)) == 2)
        workers = _workers(server)
        redis = [pid for pid in _children(server.process.pid) if b"redis-server" in _cmdline(pid)]
        assert len(redis) == 1  # no Redis listening where it looks: it started its own
        # The parent alone, as an out-of-memory kill would: the workers (its process group's
        # other members) must not keep serving, nor its Redis (a session of its own) go on.
        os.kill(server.process.pid, signal.SIGKILL)
        _wait_for(lambda: not [pid for pid in [*workers, *redis] if _alive(pid)])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended (its parent, init, reaps it)

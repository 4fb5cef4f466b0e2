"""The kill -9 drill: money requests in flight when the server dies are finished by their retries.

A real `copool serve` process on PostgreSQL takes 100 concurrent top-ups (then 40 withdrawals)
and is killed with SIGKILL after the first answers. A new server is started; every request is
retried with its Idempotency-Key once the keys' lease has run out. Every key must end answered
(201, fresh or replayed), the wallet must equal what was acknowledged, no hold may lack an
expiry, and `copool ledger verify` must pass.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.ledger import COPOOL
from tests.support.services import flushed_redis

LEASE_S = 1
TOP_UPS = 100
WITHDRAWALS = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`copool serve` as a child process of its own (so SIGKILL reaches only it)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = env
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as out:
            self.process = subprocess.Popen(
                [COPOOL, "serve", "--port", str(self.port)],
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"the server did not start: {self._log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def drill_env(fresh_postgres_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "COPOOL_ENV": "test",
        "COPOOL_DATABASE_URL": fresh_postgres_url,
        "COPOOL_REDIS_URL": flushed_redis(),
        "COPOOL_SECRET_KEY": "drill-secret-key-that-is-long-enough-0123456789",
        "COPOOL_IDEMPOTENCY_LEASE_S": str(LEASE_S),
        "COPOOL_LOGIN_LIMIT_PER_IP": "100000",
        "COPOOL_LOG_LEVEL": "WARNING",
    }


async def fire_and_kill(
    server: Server,
    path: str,
    bodies: dict[str, dict[str, Any]],
    auth: dict[str, str],
    kill_after: int,
) -> dict[str, int]:
    """Send every request at once; SIGKILL the server once `kill_after` have been answered."""
    answered: dict[str, int] = {}
    enough = asyncio.Event()

    async def send(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> None:
        try:
            response = await client.post(
                path, json=body, headers={**auth, "Idempotency-Key": key}, timeout=30
            )
        except httpx.HTTPError:
            return  # the server died under it
        answered[key] = response.status_code
        if len(answered) >= kill_after:
            enough.set()

    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=server.url, limits=limits) as client:
        tasks = [asyncio.create_task(send(client, k, b)) for k, b in bodies.items()]
        await asyncio.wait_for(enough.wait(), timeout=60)
        server.kill()
        await asyncio.gather(*tasks)
    return answered


async def retry_all(
    server: Server, path: str, bodies: dict[str, dict[str, Any]], auth: dict[str, str]
) -> dict[str, httpx.Response]:
    """Retry every request with its key until it is answered with something other than
    "in progress" (a key whose lease has not yet run out)."""
    answers: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for _ in range(20):
            pending = [k for k in bodies if k not in answers]
            if not pending:
                break
            for key in pending:
                response = await client.post(
                    path, json=bodies[key], headers={**auth, "Idempotency-Key": key}
                )
                if response.status_code != 409:
                    answers[key] = response
            await asyncio.sleep(LEASE_S)
    return answers


async def test_requests_cut_off_by_kill_9_are_finished_by_their_retries(
    drill_env: dict[str, str], fresh_postgres_url: str, tmp_path: Path
) -> None:
    server = Server(drill_env, tmp_path / "server.log")
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            registered = await client.post(
                "/v1/auth/register",
                json={
                    "email": f"{uuid.uuid4().hex}@example.com",
                    "password": "correct horse battery",
                    "display_name": "Drill",
                },
            )
        assert registered.status_code == 201, registered.text
        auth = {"Authorization": f"Bearer {registered.json()['token']}"}

        top_ups = {
            f"top-up-{i}-{uuid.uuid4().hex}": {"amount_minor": 1_000 + i, "currency": "CNY"}
            for i in range(TOP_UPS)
        }
        first = await fire_and_kill(server, "/v1/wallet/top-ups", top_ups, auth, kill_after=25)
        assert 25 <= len(first) < TOP_UPS  # the kill cut requests off mid-flight

        server.start()
        await asyncio.sleep(LEASE_S)
        answers = await retry_all(server, "/v1/wallet/top-ups", top_ups, auth)
        assert len(answers) == TOP_UPS, "every key must be answered after the restart"
        assert {r.status_code for r in answers.values()} == {201}
        # Each key moved money once: one transfer per key, each for its own amount.
        assert len({r.json()["id"] for r in answers.values()}) == TOP_UPS
        for key, response in answers.items():
            assert response.json()["amount_minor"] == top_ups[key]["amount_minor"]

        withdrawals = {
            f"withdrawal-{i}-{uuid.uuid4().hex}": {"amount_minor": 500 + i, "currency": "CNY"}
            for i in range(WITHDRAWALS)
        }
        await fire_and_kill(server, "/v1/wallet/withdrawals", withdrawals, auth, kill_after=10)
        server.start()
        await asyncio.sleep(LEASE_S)
        paid = await retry_all(server, "/v1/wallet/withdrawals", withdrawals, auth)
        assert len(paid) == WITHDRAWALS
        assert {r.status_code for r in paid.values()} == {201}
        assert {r.json()["status"] for r in paid.values()} == {"posted"}

        async with httpx.AsyncClient(base_url=server.url) as client:
            wallet = (await client.get("/v1/wallet?currency=CNY", headers=auth)).json()
        topped = sum(b["amount_minor"] for b in top_ups.values())
        withdrawn = sum(b["amount_minor"] for b in withdrawals.values())
        assert wallet == {
            "currency": "CNY",
            "available_minor": topped - withdrawn,
            "held_minor": 0,
            "balance_minor": topped - withdrawn,
        }
    finally:
        server.stop()

    conn = await asyncpg.connect(fresh_postgres_url.replace("+asyncpg", ""))
    try:
        unbounded = await conn.fetchval(
            "SELECT count(*) FROM ledger_transfers WHERE is_hold AND expires_at IS NULL"
        )
        in_progress = await conn.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE status_code IS NULL"
        )
    finally:
        await conn.close()
    assert unbounded == 0  # no hold without an expiry
    assert in_progress == 0  # no key left stuck "in progress"
    verify = await asyncio.create_subprocess_exec(
        COPOOL, "ledger", "verify", env=drill_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await verify.communicate()
    assert verify.returncode == 0, output.decode()

"""HTTP read benchmark: prints figures; run on demand (`make bench`), never in tests.

  copool on PostgreSQL: authenticated GET /v1/wallet, req/s and latency p50/p99
  a bare Litestar app doing the same SELECT with a raw asyncpg pool: the same figures, and
  the ratio copool / bare; then the same bare app with the pool's reset on release turned off
  (asyncpg runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
  release by default: a second round trip per request that copool's reads do not make)
  copool on SQLite (the embedded default): GET /v1/wallet alone, then while a second load posts
  top-ups (POST /v1/wallet/top-ups) to the same wallet: reads must not queue behind writes

Every server runs as `uvicorn --workers 2` (copool through `copool serve --workers 2`, COPOOL_ENV
=prod, logs at WARNING) and is loaded by wrk (64 connections, 2 threads) on the same machine, so
the load client competes with the servers for the cores: compare figures of one run, not of two
machines. Each read load also prints the CPU time the server's processes spent per request
(from /proc), which moves much less than req/s when something else runs on the machine.
Everything made is thrown away afterwards (servers stopped, database dropped), also after Ctrl+C.

Environment: COPOOL_BENCH_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/postgres),
COPOOL_BENCH_REDIS_URL (default redis://127.0.0.1:6379/14), COPOOL_BENCH_SECONDS (default 10),
COPOOL_BENCH_CONNECTIONS (default 64), COPOOL_BENCH_RUNS (a subset of "pg,bare,sqlite").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

ADMIN_DSN = os.environ.get(
    "COPOOL_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("COPOOL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECONDS = int(os.environ.get("COPOOL_BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("COPOOL_BENCH_CONNECTIONS", "64"))
RUNS = set(os.environ.get("COPOOL_BENCH_RUNS", "pg,bare,sqlite").split(","))
WRITER_CONNECTIONS = 4
CURRENCY = "CNY"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
#: The bare app reads these (it runs in uvicorn's worker processes).
BARE_DSN_ENV = "COPOOL_BENCH_BARE_DSN"
BARE_KEY_ENV = "COPOOL_BENCH_BARE_KEY"
#: "0": the bare app's pool keeps a connection's session as it is on release (no reset query).
BARE_POOL_RESET_ENV = "COPOOL_BENCH_BARE_POOL_RESET"


# --- the bare app: one SELECT by key on a raw asyncpg pool, the same JSON as copool ----------


class WalletOut(msgspec.Struct):
    """payments.schemas.WalletOut, copied so the bare app imports nothing of copool."""

    currency: str
    available_minor: int
    held_minor: int
    balance_minor: int


def bare_app() -> Any:
    """The floor copool is measured against: no auth, no logging, no session, no ORM."""
    import asyncpg
    from litestar import Litestar, get

    state: dict[str, Any] = {}
    key = os.environ[BARE_KEY_ENV]
    query = (
        "SELECT debits_pending, debits_posted, credits_posted FROM ledger_accounts WHERE key = $1"
    )

    async def keep_session(_: Any) -> None:
        """Nothing to reset: the app only ever runs that one SELECT outside a transaction."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        # As many connections as copool may open per process (pool_size + max_overflow).
        options: dict[str, Any] = {"min_size": 1, "max_size": 20}
        if os.environ.get(BARE_POOL_RESET_ENV) == "0":
            options["reset"] = keep_session
        state["pool"] = await asyncpg.create_pool(os.environ[BARE_DSN_ENV], **options)
        try:
            yield
        finally:
            await state["pool"].close()

    @get("/v1/wallet")
    async def wallet() -> WalletOut:
        row = await state["pool"].fetchrow(query, key)
        if row is None:
            return WalletOut(CURRENCY, 0, 0, 0)
        pending, debited, credited = row
        balance = credited - debited
        return WalletOut(CURRENCY, balance - pending, pending, balance)

    return Litestar([wallet], lifespan=[lifespan], logging_config=None)


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server(argv: list[str], env: dict[str, str], ready_url: str) -> Iterator[int]:
    """Run a server in its own session until the block ends; stop it (and its workers) after.
    Yields its process id."""
    process = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {process.returncode}")
            try:
                urllib.request.urlopen(ready_url, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answers: it is up
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{' '.join(argv)} did not start") from None
                time.sleep(0.2)
        time.sleep(1.0)  # let the second worker finish its lifespan too
        yield process.pid
    finally:
        stop(process)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and all its descendants so far (None without /proc)."""
    children: dict[int, list[int]] = {}
    try:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                    children.setdefault(int(stat[1]), []).append(int(entry))
    except OSError:
        return None
    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            ticks += int(stat[11]) + int(stat[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL to the whole session if it takes too long or
    another Ctrl+C arrives meanwhile: nothing is left running on a database about to be dropped."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise


def copool_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPOOL_")}
    env.update(
        COPOOL_ENV="prod",
        COPOOL_SECRET_KEY="bench-" + uuid.uuid4().hex + uuid.uuid4().hex,
        COPOOL_FUNDING_PROVIDER="sandbox",
        COPOOL_LOG_LEVEL="WARNING",
        COPOOL_REDIS_URL=REDIS_URL,
        COPOOL_DATABASE_URL=database_url,
    )
    return env


@contextlib.contextmanager
def copool(database_url: str) -> Iterator[tuple[str, int]]:
    """A running copool: (base URL, process id)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).with_name("copool")), "serve", "--workers", "2"]
    argv += ["--port", str(port)]
    with server(argv, copool_env(database_url), base + "/v1/health") as pid:
        yield base, pid


def post_json(url: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def get_body(url: str, token: str | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        body: bytes = r.read()
        return body


def sign_up_and_top_up(base: str) -> tuple[str, str]:
    """A fresh user with money in the wallet: (user id, token)."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    body = {"email": email, "password": "bench-password-1", "display_name": "Bench"}
    user = post_json(base + "/v1/auth/register", body)
    token = user["token"]
    post_json(base + "/v1/wallet/top-ups", {"amount_minor": 100_000, "currency": CURRENCY}, token)
    return str(user["user_id"]), token


# --- wrk -------------------------------------------------------------------------------------


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    #: CPU time the server's processes spent per request, if it was measured.
    cpu_us: float | None = None

    def __str__(self) -> str:
        bad = f", {self.errors} errors" if self.errors else ""
        cpu = f"   server CPU {self.cpu_us:5.0f} us/req" if self.cpu_us is not None else ""
        return (
            f"{self.rps:8.0f} req/s   p50 {self.p50_ms:7.2f} ms   p99 {self.p99_ms:7.2f} ms"
            f"{cpu}   ({self.requests} requests{bad})"
        )


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse_wrk(output: str) -> Load:
    def find(pattern: str) -> str:
        match = re.search(pattern, output)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{output}")
        return match.group(1)

    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return Load(
        rps=float(find(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(find(r"\n\s+50%\s+(\S+)")),
        p99_ms=_ms(find(r"\n\s+99%\s+(\S+)")),
        requests=int(find(r"(\d+) requests in")),
        errors=errors,
    )


def wrk_argv(url: str, *, connections: int, threads: int, script: Path) -> list[str]:
    return [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{SECONDS}s", "--latency",
        "--timeout", "10s", "-s", str(script), url,
    ]  # fmt: skip


def lua_script(directory: Path, name: str, token: str | None, body: str | None = None) -> Path:
    lines = []
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    if body is not None:
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = '{body}'",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return path


def load(url: str, script: Path, server_pid: int | None = None) -> Load:
    """wrk's figures, and the server's CPU per request if its process id is given."""
    argv = wrk_argv(url, connections=CONNECTIONS, threads=2, script=script)
    before = cpu_seconds(server_pid) if server_pid is not None else None
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    measured = parse_wrk(result.stdout)
    after = cpu_seconds(server_pid) if server_pid is not None else None
    if before is not None and after is not None and measured.requests:
        measured.cpu_us = (after - before) / measured.requests * 1e6
    return measured


def load_with_writer(url: str, reads: Path, writes: Path) -> tuple[Load, Load]:
    """Reads at full load while one more wrk posts top-ups on a few connections of its own."""
    writer = subprocess.Popen(
        wrk_argv(url + "/top-ups", connections=WRITER_CONNECTIONS, threads=1, script=writes),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        read = load(url, reads)
        written, _ = writer.communicate(timeout=SECONDS + 30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    return read, parse_wrk(written)


# --- PostgreSQL ------------------------------------------------------------------------------


async def admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def migrate(url: str) -> None:
    from app.db import create_engine
    from app.migrate import upgrade

    engine = create_engine(url, pool_size=1)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def postgres_database() -> Iterator[tuple[str, str]]:
    """A throw-away, migrated database: (asyncpg DSN, SQLAlchemy URL); dropped afterwards."""
    name = f"copool_bench_http_{uuid.uuid4().hex[:8]}"
    dsn = ADMIN_DSN.rpartition("/")[0] + "/" + name
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(migrate(url))
        yield dsn, url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def flush_redis() -> None:
    """The bench's own Redis db: no rate-limit counters left by an earlier run."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    finally:
        client.close()


# --- the run ---------------------------------------------------------------------------------


def load_bare(dsn: str, key: str, expected: bytes, workdir: Path, *, pool_reset: bool) -> Load:
    """The bare app under the same load, once it answers exactly what copool answered."""
    port = free_port()
    env = dict(os.environ)
    env[BARE_DSN_ENV] = dsn
    env[BARE_KEY_ENV] = key
    env[BARE_POOL_RESET_ENV] = "1" if pool_reset else "0"
    argv = [
        sys.executable, "-m", "uvicorn", "bench.http:bare_app", "--factory",
        "--workers", "2", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/wallet"
    with server(argv, env, url) as pid:
        answer = get_body(url)
        if answer != expected:
            raise RuntimeError(f"bare app answers {answer!r}, not {expected!r}")
        return load(url, lua_script(workdir, "reads-bare.lua", None), pid)


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="copool-bench-http-"))
    try:
        flush_redis()
        print(
            f"read benchmark: GET /v1/wallet, uvicorn 2 workers per server, wrk {CONNECTIONS} "
            f"connections 2 threads {SECONDS} s, on {os.cpu_count()} cores shared with wrk"
        )
        copool_pg: Load | None = None
        if RUNS & {"pg", "bare"}:
            with postgres_database() as (dsn, url):
                with copool(url) as (base, pid):
                    user_id, token = sign_up_and_top_up(base)
                    expected = get_body(base + "/v1/wallet", token)
                    reads = lua_script(workdir, "reads-pg.lua", token)
                    if "pg" in RUNS:
                        copool_pg = load(base + "/v1/wallet", reads, pid)
                        print(f"  copool, PostgreSQL : {copool_pg}")
                if "bare" in RUNS:
                    key = f"wallet:{user_id}:{CURRENCY}"
                    bare = load_bare(dsn, key, expected, workdir, pool_reset=True)
                    print(f"  bare asyncpg       : {bare}")
                    if copool_pg is not None:
                        ratio = copool_pg.rps / bare.rps
                        print(f"  copool / bare      : {ratio:8.2f}   (target >= 0.60)")
                    bare = load_bare(dsn, key, expected, workdir, pool_reset=False)
                    print(f"  bare asyncpg, no reset on release: {bare}")
                    if copool_pg is not None:
                        ratio = copool_pg.rps / bare.rps
                        print(f"  copool / that      : {ratio:8.2f}")
        if "sqlite" in RUNS:
            database = workdir / "copool.db"
            sqlite_url = f"sqlite+aiosqlite:///{database}"
            asyncio.run(migrate(sqlite_url))
            with copool(sqlite_url) as (base, pid):
                _, token = sign_up_and_top_up(base)
                reads = lua_script(workdir, "reads-sqlite.lua", token)
                alone = load(base + "/v1/wallet", reads, pid)
                print(f"  copool, SQLite, reads alone      : {alone}")
                body = json.dumps({"amount_minor": 1, "currency": CURRENCY})
                writes = lua_script(workdir, "writes-sqlite.lua", token, body)
                read, written = load_with_writer(base + "/v1/wallet", reads, writes)
                print(f"  copool, SQLite, reads under writes: {read}")
                print(f"  copool, SQLite, the writes ({WRITER_CONNECTIONS} connections): {written}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; servers stopped, database dropped", file=sys.stderr)
        sys.exit(130)

"""Flash-crowd join benchmark: prints figures; run on demand, never in tests.

  copool (`copool serve --workers 2`, PostgreSQL + Redis): CLIENTS members join one hot pool
  (max_quantity 1,000,000, so joins keep succeeding) with quantity 1, after a warm-up at the
  paced rate, paced first, offering
  PACED_RATE joins/s in all for PACED_SECONDS (each connection on its own schedule, latency
  counted from the scheduled send, so queueing shows): joins/s and p50/p99 at that rate; then
  for SECONDS as fast as they can: successful joins/s, p50/p99 (a closed loop: with 1,000
  connections each waiting for its answer, latency is 1,000 / throughput by Little's law, so
  this phase gives throughput, not latency); then the same crowd on a pool capped at 300:
  refused joins/s once full, p50/p99 of the refusals
  a straightforward join written here (a bare Litestar app, `uvicorn --workers 2`, asyncpg on the
  same database; one transaction: SELECT the pool FOR UPDATE, check the cap, UPDATE its committed
  quantity, INSERT a join row; bench-owned tables) under the same two loads, and the ratio
  for both: every pool's committed quantity in the database against the number of 201 answers

With 1,000 members a member joins the hot pool many times: copool's later joins raise the member's
quantity (one more hold, of what the raise adds); the straightforward app inserts a row each time.

Load: LOAD_PROCESSES processes (not the servers'), each an asyncio loop (uvloop) with its share of
the CLIENTS connections: a minimal HTTP/1.1 keep-alive client (one request in flight per
connection, each connection one member and its token, like a person tapping "join" again as soon
as the answer comes). httpx costs several times more CPU per request and wrk cannot give each
connection its own member; the load's CPU per request is printed, so it can be checked. Every
phase starts with all connections open; rates count answers received within the phase, latency
percentiles are of those answers (from request written to body read).

Auth, the same for both: the members' tokens are copool's (HS256 JWTs signed with the server's
secret). copool verifies each distinct token once per process (CachingJWTAuthenticationMiddleware)
and then reads the user's roles and standing through its 5 s auth cache; the straightforward app
verifies each distinct token once per process with PyJWT and then trusts its `sub`. The
straightforward join moves no money (no trust gate, no ledger hold); copool's does: the ratio is
of what each join does, as the issue asks.

Every server runs as uvicorn with 2 workers (copool with COPOOL_ENV=prod, logs at WARNING,
database pool 10 + 10 per process; the straightforward app an asyncpg pool of up to 20 per
process), one at a time, on the same cores as the load and PostgreSQL: compare figures of one
run. Everything made is thrown away afterwards (servers stopped, database dropped, Redis db
flushed), also after Ctrl+C.

Environment: COPOOL_BENCH_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/postgres),
COPOOL_BENCH_JOIN_REDIS_URL (default redis://127.0.0.1:6379/5: a db the tests do not use; it is
flushed), COPOOL_BENCH_SECONDS (hot phase, default 10), COPOOL_BENCH_FULL_SECONDS (capped pool,
default 5), COPOOL_BENCH_WARMUP_SECONDS (default 2), COPOOL_BENCH_CLIENTS (default 1000),
COPOOL_BENCH_LOAD_PROCESSES (default 4), COPOOL_BENCH_RUNS (a subset of "copool,straightforward").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from bench.http import ADMIN_DSN, admin, copool_env, cpu_seconds, free_port, migrate, post_json
from bench.http import server as running_server

REDIS_URL = os.environ.get("COPOOL_BENCH_JOIN_REDIS_URL", "redis://127.0.0.1:6379/5")
SECONDS = float(os.environ.get("COPOOL_BENCH_SECONDS", "10"))
FULL_SECONDS = float(os.environ.get("COPOOL_BENCH_FULL_SECONDS", "5"))
WARMUP_SECONDS = float(os.environ.get("COPOOL_BENCH_WARMUP_SECONDS", "2"))
CLIENTS = int(os.environ.get("COPOOL_BENCH_CLIENTS", "1000"))
LOAD_PROCESSES = int(os.environ.get("COPOOL_BENCH_LOAD_PROCESSES", "4"))
RUNS = set(os.environ.get("COPOOL_BENCH_RUNS", "copool,straightforward").split(","))
#: The paced phase: joins offered per second in all, spread over the CLIENTS connections.
PACED_RATE = float(os.environ.get("COPOOL_BENCH_PACED_RATE", "1500"))
PACED_SECONDS = float(os.environ.get("COPOOL_BENCH_PACED_SECONDS", "10"))
HOT_CAP = 1_000_000
CAP = 300
CURRENCY = "CNY"
#: Cheap units, so a member's growing hold stays under the new-user deposit threshold.
TIERS = [
    {"min_quantity": 1, "unit_price_minor": 100},
    {"min_quantity": 10_000, "unit_price_minor": 90},
    {"min_quantity": 100_000, "unit_price_minor": 80},
]
MEMBER_FUNDS_MINOR = 1_000_000
#: The trust gate asks a new organizer of a pool worth 10^8 for a deposit of 20 %.
ORGANIZER_FUNDS_MINOR = 100_000_000
#: Seconds between starting the load processes and the phase's start (they open connections).
LEAD_S = 3.0
REQUEST_TIMEOUT_S = 30.0
JOIN_BODY = b'{"quantity": 1}'
#: The straightforward app reads these (it runs in uvicorn's worker processes).
STRAIGHT_DSN_ENV = "COPOOL_BENCH_STRAIGHT_DSN"
STRAIGHT_SECRET_ENV = "COPOOL_BENCH_STRAIGHT_SECRET"


# --- the straightforward join ----------------------------------------------------------------


class JoinBody(msgspec.Struct):
    quantity: int


class JoinAnswer(msgspec.Struct):
    id: int
    pool_id: uuid.UUID
    quantity: int
    status: str


STRAIGHT_SCHEMA = """
CREATE TABLE bench_pools (
    id uuid PRIMARY KEY,
    committed_quantity integer NOT NULL DEFAULT 0,
    max_quantity integer NOT NULL
);
CREATE TABLE bench_joins (
    id bigserial PRIMARY KEY,
    pool_id uuid NOT NULL REFERENCES bench_pools (id),
    user_id uuid NOT NULL,
    quantity integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""


def straightforward_app() -> Any:
    """SELECT ... FOR UPDATE, check, UPDATE, INSERT: the join the issue measured at ~500/s."""
    import asyncpg
    import jwt
    from litestar import Litestar, Request, Response, post
    from litestar.params import FromPath, JSONBody

    secret = os.environ[STRAIGHT_SECRET_ENV]
    #: Each distinct token verified once per process, as copool does.
    members: dict[str, uuid.UUID] = {}
    state: dict[str, Any] = {}

    def member(request: Request[Any, Any, Any]) -> uuid.UUID | None:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ")
        user_id = members.get(token)
        if user_id is None:
            try:
                user_id = uuid.UUID(jwt.decode(token, secret, algorithms=["HS256"])["sub"])
            except (jwt.PyJWTError, KeyError, ValueError):
                return None
            members[token] = user_id
        return user_id

    def problem(status: int, kind: str) -> Response[Any]:
        content = {"type": kind, "status": status}
        return Response(content, status_code=status, media_type="application/problem+json")

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        # As many connections as copool may open per process (pool_size + max_overflow).
        state["pool"] = await asyncpg.create_pool(
            os.environ[STRAIGHT_DSN_ENV], min_size=1, max_size=20
        )
        try:
            yield
        finally:
            await state["pool"].close()

    # The annotations are strings (`from __future__ import annotations`): name the local ones.
    names = {"Request": Request, "Response": Response, "FromPath": FromPath, "JSONBody": JSONBody}

    @post("/v1/pools/{pool_id:uuid}/joins", status_code=201, signature_namespace=names)
    async def join(
        request: Request[Any, Any, Any], pool_id: FromPath[uuid.UUID], data: JSONBody[JoinBody]
    ) -> Response[Any]:
        user_id = member(request)
        if user_id is None:
            return problem(401, "unauthorized")
        if data.quantity < 1:
            return problem(422, "validation")
        async with state["pool"].acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT committed_quantity, max_quantity FROM bench_pools WHERE id = $1 FOR UPDATE",
                pool_id,
            )
            if row is None:
                return problem(404, "not-found")
            committed, cap = row
            if committed + data.quantity > cap:
                return problem(409, "pool-full")
            await conn.execute(
                "UPDATE bench_pools SET committed_quantity = committed_quantity + $2 WHERE id = $1",
                pool_id,
                data.quantity,
            )
            join_id = await conn.fetchval(
                "INSERT INTO bench_joins (pool_id, user_id, quantity) VALUES ($1, $2, $3) "
                "RETURNING id",
                pool_id,
                user_id,
                data.quantity,
            )
        return Response(JoinAnswer(join_id, pool_id, data.quantity, "active"), status_code=201)

    return Litestar([join], lifespan=[lifespan], logging_config=None)


# --- the load: processes of raw HTTP/1.1 keep-alive clients ----------------------------------

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)


@dataclass
class LoadTask:
    port: int
    path: str
    tokens: list[str]
    #: Wall-clock start and length of the phase.
    start: float
    seconds: float
    #: Paced: each connection sends on its own schedule, one join every `interval_s` (a random
    #: offset apart); a late answer delays the next send, whose latency still counts from its
    #: scheduled time. None: closed loop, the next join as soon as the answer came.
    interval_s: float | None = None
    #: Which load process this is: each draws its connections' offsets from its own seed
    #: (with one seed for all, the processes' connections sent in step, four at an instant).
    process: int = 0


@dataclass
class Shot:
    """What one load process saw."""

    #: Latencies (ms) of the answers received within the phase, by status.
    latencies: dict[int, list[float]] = field(default_factory=dict)
    #: Every answer by status, also those that came after the phase ended (the database has
    #: those joins too).
    answers: Counter[int] = field(default_factory=Counter)
    #: (second of the phase the join was sent in, latency ms) of each 201 within the phase.
    timeline: list[tuple[int, float]] = field(default_factory=list)
    #: Timeouts, broken connections: by exception name.
    failures: Counter[str] = field(default_factory=Counter)
    #: One body per status that is neither 201 nor 409.
    samples: dict[int, bytes] = field(default_factory=dict)
    cpu_s: float = 0.0
    #: How late this process was for the phase's start (its connections took that long).
    late_s: float = 0.0


def _request(task: LoadTask, token: str) -> bytes:
    return (
        f"POST {task.path} HTTP/1.1\r\nHost: 127.0.0.1:{task.port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(JOIN_BODY)}\r\n\r\n"
    ).encode() + JOIN_BODY


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    for attempt in range(50):
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


async def _member(
    task: LoadTask, token: str, start: float, end: float, shot: Shot, offset: float
) -> None:
    """One member's connection: join, wait for the answer, join again (at once, or at its next
    scheduled time when paced), until the phase ends."""
    loop = asyncio.get_running_loop()
    request = _request(task, token)
    reader, writer = await _connect(task.port)
    shot.late_s = max(shot.late_s, loop.time() - start)
    await asyncio.sleep(start - loop.time())
    scheduled = start + offset
    try:
        while loop.time() < end:
            if task.interval_s is not None:
                if scheduled >= end:
                    break
                await asyncio.sleep(scheduled - loop.time())
                began = time.perf_counter() - max(0.0, loop.time() - scheduled)
                scheduled += task.interval_s
            else:
                began = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = _CONTENT_LENGTH.search(head)
                    if length is None:  # uvicorn sends one with every answer here
                        raise ValueError("an answer without Content-Length")
                    body = await reader.readexactly(int(length.group(1)))
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                shot.failures[type(exc).__name__] += 1
                writer.close()
                reader, writer = await _connect(task.port)
                continue
            elapsed_ms = (time.perf_counter() - began) * 1000
            status = int(head[9:12])
            shot.answers[status] += 1
            if status not in (201, 409):
                shot.samples.setdefault(status, body[:300])
            if loop.time() <= end:
                shot.latencies.setdefault(status, []).append(elapsed_ms)
                if status == 201:
                    sent_at = loop.time() - elapsed_ms / 1000 - start
                    shot.timeline.append((int(max(0.0, sent_at)), elapsed_ms))
            if _CLOSE.search(head):
                writer.close()
                reader, writer = await _connect(task.port)
    finally:
        writer.close()


async def _crowd(task: LoadTask) -> Shot:
    loop = asyncio.get_running_loop()
    start = task.start - time.time() + loop.time()
    shot = Shot()
    spread = random.Random(f"{task.start}:{task.process}")
    await asyncio.gather(
        *(
            _member(
                task,
                token,
                start,
                start + task.seconds,
                shot,
                spread.uniform(0, task.interval_s) if task.interval_s else 0.0,
            )
            for token in task.tokens
        )
    )
    return shot


def load_process(task: LoadTask) -> Shot:
    """Runs in a load process: its members' connections on one event loop."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    cpu = time.process_time()
    with runner:
        shot = runner.run(_crowd(task))
    shot.cpu_s = time.process_time() - cpu
    return shot


# --- a phase and its figures -----------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Phase:
    seconds: float
    shots: list[Shot]
    server_cpu_s: float | None
    postgres_cpu_s: float | None

    def latencies(self, status: int) -> list[float]:
        return [ms for shot in self.shots for ms in shot.latencies.get(status, [])]

    @property
    def created(self) -> int:
        """Every 201 of the phase (also those answered after it)."""
        return sum(shot.answers[201] for shot in self.shots)

    @property
    def answered(self) -> int:
        return sum(len(v) for shot in self.shots for v in shot.latencies.values())

    def per_answer_us(self, cpu_s: float | None) -> str:
        if cpu_s is None or not self.answered:
            return "    ?"
        return f"{cpu_s / self.answered * 1e6:5.0f}"

    def summary(self) -> str:
        joins, refused = self.latencies(201), self.latencies(409)
        answers = sum((shot.answers for shot in self.shots), Counter[int]())
        failures = sum((shot.failures for shot in self.shots), Counter[str]())
        late = answers.total() - self.answered
        lines = [
            f"{len(joins) / self.seconds:7.0f} joins/s    p50 {_percentile(joins, 0.5):7.1f} ms  "
            f"p99 {_percentile(joins, 0.99):7.1f} ms   ({len(joins)} joins)",
            f"{len(refused) / self.seconds:7.0f} refused/s  p50 {_percentile(refused, 0.5):7.1f} "
            f"ms  p99 {_percentile(refused, 0.99):7.1f} ms   ({len(refused)} refusals)",
            f"CPU us per answer: servers {self.per_answer_us(self.server_cpu_s)}, PostgreSQL "
            f"(all of it) {self.per_answer_us(self.postgres_cpu_s)}, load "
            f"{self.per_answer_us(sum(s.cpu_s for s in self.shots))}; load late "
            f"{max(s.late_s for s in self.shots):.2f} s",
        ]
        lines.append(
            f"every answer by status {dict(sorted(answers.items()))}, {late} of them after "
            f"the phase ended (in flight at its end)"
            + (f"; no answer: {dict(failures)}" if failures else "")
        )
        by_second: dict[int, list[float]] = {}
        for shot in self.shots:
            for second, ms in shot.timeline:
                by_second.setdefault(second, []).append(ms)
        if by_second:
            lines.append(
                "joins' p99 ms by the second they were sent in: "
                + " ".join(f"{_percentile(by_second[s], 0.99):.0f}" for s in sorted(by_second))
            )
        samples = {k: v for shot in self.shots for k, v in shot.samples.items()}
        if samples:
            lines.append(f"a body of each other status: {samples}")
        return "\n      ".join(lines)


def drive(
    port: int,
    path: str,
    tokens: list[str],
    seconds: float,
    server_pid: int,
    rate: float | None = None,
) -> Phase:
    """Every member joins again and again for `seconds`, from LOAD_PROCESSES processes: as fast
    as the answers come, or paced so that all of them offer `rate` joins a second."""
    context = multiprocessing.get_context("spawn")
    processes = max(1, min(LOAD_PROCESSES, len(tokens)))
    start = time.time() + LEAD_S
    interval = len(tokens) / rate if rate else None
    tasks = [
        LoadTask(port, path, tokens[i::processes], start, seconds, interval, process=i)
        for i in range(processes)
    ]
    postgres = postgres_pid()
    with context.Pool(processes) as pool:
        running = pool.map_async(load_process, tasks)
        time.sleep(max(0.0, start - time.time()))
        server_before = cpu_seconds(server_pid)
        postgres_before = cpu_seconds(postgres) if postgres else None
        time.sleep(max(0.0, start + seconds - time.time()))
        server_after = cpu_seconds(server_pid)
        postgres_after = cpu_seconds(postgres) if postgres else None
        shots = running.get(timeout=seconds + LEAD_S + REQUEST_TIMEOUT_S + 30)
    return Phase(
        seconds=seconds,
        shots=shots,
        server_cpu_s=server_after - server_before
        if server_before is not None and server_after is not None
        else None,
        postgres_cpu_s=postgres_after - postgres_before
        if postgres_before is not None and postgres_after is not None
        else None,
    )


# --- servers and their logs ------------------------------------------------------------------


@contextlib.contextmanager
def logged_server(argv: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[int]:
    """bench.http's server, its stderr (the logs) going to a file rather than this terminal
    (`exec` keeps the process id, so stopping it stops the server itself)."""
    wrapped = ["/bin/sh", "-c", 'exec "$@" 2>>"$0"', str(log), *argv]
    with running_server(wrapped, env, ready_url) as pid:
        yield pid


def log_summary(log: Path, top: int = 6) -> str:
    """The most frequent log events (JSON lines), or lines, of a server's run."""
    events: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                error = str(record.get("error", ""))[:100]
                events[f"{record.get('level')} {record.get('event')!r} {error}".rstrip()] += 1
            elif line.strip():
                events[f"(text) {line.strip()[:100]}"] += 1
    if not events:
        return "server log: empty"
    lines = [f"{count:7d} x {event}" for event, count in events.most_common(top)]
    return f"server log, {events.total()} lines, most frequent:\n      " + "\n      ".join(lines)


# --- the world: database, Redis, members, pools ----------------------------------------------


def postgres_pid() -> int | None:
    """The postmaster's process id, if PostgreSQL runs on this machine (its CPU is measured)."""

    async def backend_stat() -> str:
        import asyncpg

        conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:  # read while the backend lives: its parent is the postmaster
            stat = Path(f"/proc/{await conn.fetchval('SELECT pg_backend_pid()')}/stat")
            return await asyncio.to_thread(stat.read_text)
        finally:
            await conn.close()

    try:
        return int(asyncio.run(backend_stat()).rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def postgres_database() -> Iterator[tuple[str, str]]:
    """A throw-away, migrated database: (asyncpg DSN, SQLAlchemy URL); dropped afterwards."""
    name = f"copool_bench_join_{uuid.uuid4().hex[:8]}"
    dsn = ADMIN_DSN.rpartition("/")[0] + "/" + name
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(migrate(url))
        yield dsn, url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def flush_redis() -> None:
    import redis

    with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
        client.flushdb()


def server_env(url: str) -> dict[str, str]:
    env = copool_env(url)
    env["COPOOL_REDIS_URL"] = REDIS_URL
    return env


async def crowd_tokens(env: dict[str, str], count: int) -> list[str]:
    """`count` funded members inserted directly (no password hashing): their bearer tokens."""
    from app.db import create_engine, create_sessionmaker
    from app.settings import load_settings
    from tests.support.crowd import funded_members

    settings = load_settings(env)
    engine = create_engine(settings.database_url)
    try:
        members = await funded_members(
            create_sessionmaker(engine),
            settings,
            count=count,
            amount_minor=MEMBER_FUNDS_MINOR,
            now=datetime.now(UTC),
            currency=CURRENCY,
        )
    finally:
        await engine.dispose()
    return [headers["Authorization"].removeprefix("Bearer ") for _, headers in members]


async def fund(url: str, user_id: uuid.UUID, amount_minor: int) -> None:
    from app.db import create_engine, create_sessionmaker
    from tests.support import ledger

    engine = create_engine(url)
    try:
        await ledger.fund(
            create_sessionmaker(engine), user_id, amount_minor, CURRENCY, now=datetime.now(UTC)
        )
    finally:
        await engine.dispose()


def organizer(base: str, url: str) -> str:
    """A new organizer with money for the deposit a big pool asks: their token."""
    body = {
        "email": f"bench-organizer-{uuid.uuid4().hex[:12]}@example.com",
        "password": "bench-password-1",
        "display_name": "Bench organizer",
        "roles": ["organizer"],
    }
    user = post_json(base + "/v1/auth/register", body)
    asyncio.run(fund(url, uuid.UUID(str(user["user_id"])), ORGANIZER_FUNDS_MINOR))
    return str(user["token"])


def open_pool(base: str, token: str, cap: int) -> str:
    body = {
        "title": f"Flash sale, {cap}",
        "currency": CURRENCY,
        "tiers": [tier for tier in TIERS if tier["min_quantity"] <= cap],
        "min_quantity": 1,
        "max_quantity": cap,
        "deadline": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    try:
        return str(post_json(base + "/v1/pools", body, token)["id"])
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"opening a pool: {exc.code} {exc.read()!r}") from None


async def committed(dsn: str, table: str, pool_id: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        query = f"SELECT committed_quantity FROM {table} WHERE id = $1"
        value: int = await conn.fetchval(query, uuid.UUID(pool_id))
        return value
    finally:
        await conn.close()


async def create_straight_pools(dsn: str) -> tuple[str, str]:
    import asyncpg

    hot, capped = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(STRAIGHT_SCHEMA)
        await conn.executemany(
            "INSERT INTO bench_pools (id, max_quantity) VALUES ($1, $2)",
            [(hot, HOT_CAP), (capped, CAP)],
        )
    finally:
        await conn.close()
    return str(hot), str(capped)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Result:
    hot: Phase
    paced: Phase
    full: Phase
    #: committed_quantity in the database == 201 answers, per pool.
    checks: list[str]
    log: str


Phases = tuple[Phase, Phase, Phase, Phase]


def measure(port: int, pid: int, tokens: list[str], pools: tuple[str, str], prefix: str) -> Phases:
    """Warm-up, the paced load and the closed loop on the first pool, then the capped one; one
    load at a time. The paced load comes first: after the closed loop, PostgreSQL spends the
    next seconds vacuuming what its tens of thousands of joins left behind, and the paced
    latency would be of that cleanup as much as of the joins."""
    hot_path, capped_path = (f"{prefix}/{pool}/joins" for pool in pools)
    # The warm-up (connections opened, caches filled) offers the paced rate: a closed loop right
    # before the paced phase would leave it the backlog of its burst to work off.
    warmup = drive(port, hot_path, tokens, WARMUP_SECONDS, pid, rate=PACED_RATE)
    paced = drive(port, hot_path, tokens, PACED_SECONDS, pid, rate=PACED_RATE)
    hot = drive(port, hot_path, tokens, SECONDS, pid)
    full = drive(port, capped_path, tokens, FULL_SECONDS, pid)
    return warmup, hot, paced, full


def tally(dsn: str, table: str, pools: tuple[str, str], phases: Phases, log: Path) -> Result:
    """The figures, and every pool's committed quantity in the database against its 201s."""
    warmup, hot, paced, full = phases
    hot_db, capped_db = (asyncio.run(committed(dsn, table, pool)) for pool in pools)
    checks = []
    for name, in_database, created in (
        ("hot pool", hot_db, warmup.created + hot.created + paced.created),
        (f"pool capped at {CAP}", capped_db, full.created),
    ):
        verdict = "ok" if in_database == created else "MISMATCH"
        checks.append(f"{name}: committed_quantity {in_database}, 201 answers {created}: {verdict}")
    return Result(hot, paced, full, checks, log_summary(log))


def run_copool(dsn: str, url: str, tokens: list[str], env: dict[str, str], log: Path) -> Result:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).with_name("copool")), "serve", "--workers", "2"]
    argv += ["--port", str(port)]
    with logged_server(argv, env, base + "/v1/health", log) as pid:
        token = organizer(base, url)
        pools = open_pool(base, token, HOT_CAP), open_pool(base, token, CAP)
        phases = measure(port, pid, tokens, pools, "/v1/pools")
    return tally(dsn, "pools", pools, phases, log)


def run_straightforward(dsn: str, tokens: list[str], env: dict[str, str], log: Path) -> Result:
    pools = asyncio.run(create_straight_pools(dsn))
    port = free_port()
    environ = dict(os.environ)
    environ[STRAIGHT_DSN_ENV] = dsn
    environ[STRAIGHT_SECRET_ENV] = env["COPOOL_SECRET_KEY"]
    argv = [
        sys.executable, "-m", "uvicorn", "bench.pool_join:straightforward_app", "--factory",
        "--workers", "2", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    with logged_server(argv, environ, f"http://127.0.0.1:{port}/", log) as pid:
        phases = measure(port, pid, tokens, pools, "/v1/pools")
    return tally(dsn, "bench_pools", pools, phases, log)


def report(name: str, result: Result) -> None:
    print(
        f"  {name}, hot pool paced at {PACED_RATE:g} joins/s offered ({PACED_SECONDS:g} s):"
        f"\n      {result.paced.summary()}"
    )
    print(f"  {name}, hot pool ({SECONDS:g} s):\n      {result.hot.summary()}")
    print(f"  {name}, pool capped at {CAP} ({FULL_SECONDS:g} s):\n      {result.full.summary()}")
    for line in result.checks:
        print(f"    check {line}")
    print(f"    {result.log}")


def headline(name: str, result: Result) -> str:
    joins, refused = result.hot.latencies(201), result.full.latencies(409)
    paced = result.paced.latencies(201)
    return (
        f"{name}: {len(joins) / result.hot.seconds:6.0f} joins/s  p50 "
        f"{_percentile(joins, 0.5):7.1f} ms  p99 {_percentile(joins, 0.99):7.1f} ms   "
        f"paced {len(paced) / result.paced.seconds:6.0f} joins/s  p50 "
        f"{_percentile(paced, 0.5):7.1f} ms  p99 {_percentile(paced, 0.99):7.1f} ms   "
        f"refused once full {len(refused) / result.full.seconds:6.0f}/s"
    )


def main() -> None:
    print(
        f"pool join benchmark: {CLIENTS} members on {CLIENTS} keep-alive connections from "
        f"{LOAD_PROCESSES} load processes, quantity 1 per join; {WARMUP_SECONDS:g} s warm-up, "
        f"{PACED_SECONDS:g} s on a hot pool paced at {PACED_RATE:g} joins/s offered, then "
        f"{SECONDS:g} s on it as a closed loop, {FULL_SECONDS:g} s on a pool capped at {CAP}; "
        f"2 server workers, on {os.cpu_count()} cores shared with the load and PostgreSQL"
    )
    flush_redis()
    workdir = Path(tempfile.mkdtemp(prefix="copool-bench-join-"))
    try:
        with postgres_database() as (dsn, url):
            env = server_env(url)
            tokens = asyncio.run(crowd_tokens(env, CLIENTS))
            results: dict[str, Result] = {}
            if "copool" in RUNS:
                results["copool"] = run_copool(dsn, url, tokens, env, workdir / "copool.log")
                report("copool", results["copool"])
                flush_redis()
            if "straightforward" in RUNS:
                name = "straightforward"
                results[name] = run_straightforward(dsn, tokens, env, workdir / "straight.log")
                report("straightforward SELECT ... FOR UPDATE join", results[name])
        print("summary (hot pool; refusals on the capped pool):")
        for name, each in results.items():
            print(f"  {headline(f'{name:15}', each)}")
        if len(results) == 2:
            ours, theirs = (len(each.hot.latencies(201)) for each in results.values())
            ratio = ours / theirs if theirs else float("inf")
            print(
                f"  copool / straightforward joins/s: {ratio:.2f}   "
                f"(targets: >= 1,500 joins/s, p99 < 100 ms, >= 3x)"
            )
    finally:
        flush_redis()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; servers stopped, database dropped", file=sys.stderr)
        sys.exit(130)

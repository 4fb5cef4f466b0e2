"""The Litestar application: wires settings, database, Redis, auth, errors and every domain."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime

import structlog
from arq.connections import ArqRedis
from arq.worker import Worker
from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from redis.asyncio import BlockingConnectionPool

from app.accounts.api import AuthController, MeController
from app.admin import AdminController
from app.auth import (
    AuthCache,
    RateLimiter,
    auth_change_notifier,
    auth_states_loader,
    create_jwt_auth,
)
from app.body import StrictJSONRequest
from app.clock import utc_now
from app.db import create_engine, create_read_sessionmaker, create_sessionmaker
from app.deps import DEPENDENCIES
from app.health import HealthController
from app.idempotency import idempotency_middleware
from app.logging import configure_logging, request_id_middleware
from app.openapi import openapi_config
from app.problems import exception_handlers
from app.query import reject_repeated_parameters
from app.serving import ProblemHTTPProtocol
from app.settings import Env, Settings, load_settings
from groupbuy.admission import Admission
from groupbuy.api import MyJoinsController, PoolController
from groupbuy.jobs import scheduler as pool_scheduler
from payments.api import LedgerController, WalletController
from payments.chain_writer import run_chain_writer
from payments.funding import funding_provider
from rides.api import MyRidesController, RideController
from rides.config import ride_config
from rides.jobs import scheduler as ride_scheduler
from trust.api import TrustAdminController, TrustController
from workers.settings import job_deserializer, job_serializer, worker_options

#: The collector's thresholds: a request allocates many objects, and the default young
#: generation (700) was collected so often under load that it cost throughput and tail latency
#: (bench/pool_join.py: with these and the freeze, 3,000 -> 3,800 joins/s, p99 at 1,500/s
#: offered 320 -> 150 ms).
GC_THRESHOLDS = (20_000, 20, 20)

log = structlog.get_logger("copool.app")

REDIS_TIMEOUT_S = 2.0


def create_redis(url: str) -> ArqRedis:
    """One connection pool for the app's lifetime; ArqRedis is a Redis client that can enqueue."""
    # Blocking: a burst waits briefly for a free connection instead of failing at once.
    pool = BlockingConnectionPool.from_url(
        url,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        health_check_interval=30,
        max_connections=64,
    )
    return ArqRedis(
        connection_pool=pool,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], datetime] = utc_now
) -> Litestar:
    """Build the app; engines and Redis clients are created in its lifespan, on its own loop."""
    settings = settings or load_settings()
    configure_logging(settings)
    # The HTTP protocol of `copool serve` runs in this process (each worker builds its app).
    ProblemHTTPProtocol.read_timeout_s = settings.http_read_timeout_s
    jwt_auth = create_jwt_auth(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            connect_timeout_s=settings.db_connect_timeout_s,
            statement_timeout_s=settings.db_statement_timeout_s,
        )
        redis = create_redis(settings.redis_url)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.read_sessionmaker = create_read_sessionmaker(engine)
        app.state.redis = redis
        app.state.limiter = RateLimiter(redis)
        #: Pool settlements are enqueued (after their unit of work commits) through this.
        app.state.schedule_pool = pool_scheduler(redis)
        #: The Redis admission gate in front of each pool's row (groupbuy/admission.py).
        app.state.admission = Admission(redis)
        #: A matching run at the end of the current window (rides/jobs.py).
        app.state.schedule_matching = ride_scheduler(redis, settings.ride_match_window_s)
        app.state.auth_cache = auth_cache = AuthCache(ttl_s=settings.auth_cache_ttl_s)
        #: Pass to account use cases: forgets the user here and announces it to other processes.
        app.state.notify_auth_change = auth_change_notifier(auth_cache, redis)
        #: What the auth cache reads users' roles and standing with.
        app.state.load_auth_states = load_auth_states = auth_states_loader(
            app.state.read_sessionmaker
        )
        auth_listener = asyncio.create_task(auth_cache.listen(redis))
        auth_refresher = asyncio.create_task(auth_cache.keep_fresh(load_auth_states))
        sequencer = asyncio.create_task(
            run_chain_writer(app.state.sessionmaker, interval_s=settings.ledger_chain_interval_s)
        )
        worker_task: asyncio.Task[None] | None = None
        if settings.env is not Env.TEST:  # (tests build hundreds of apps in one process)
            # Everything built so far lives as long as the process: keep it out of the
            # collector's generations, so a collection under load walks only what requests
            # allocate, and collect the young generation less often.
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        if settings.inline_worker:
            options = worker_options(settings)
            options["ctx"].update(clock=clock, funding=app.state.funding)
            worker = Worker(**options, handle_signals=False)
            worker_task = asyncio.create_task(worker.async_run())
            log.info("arq worker running inside this process", redis=settings.redis_url)
        try:
            yield
        finally:
            # Stop everything that uses Redis or the database before closing them.
            for task in (auth_listener, auth_refresher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            sequencer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sequencer
            if worker_task is not None:
                worker_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker_task
                # Its running jobs are cancelled (as arq's close would) and awaited here: a
                # cancelled job's CancelledError is its end, and close() would stop at it
                # before the worker's own shutdown (its database) and its Redis pool.
                jobs = list(worker.tasks.values())
                for job in jobs:
                    job.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)
                worker.tasks.clear()
                await worker.close()
            await app.state.admission.aclose()
            await redis.aclose()
            await engine.dispose()

    app = Litestar(
        route_handlers=[
            HealthController,
            AuthController,
            MeController,
            WalletController,
            LedgerController,
            PoolController,
            MyJoinsController,
            RideController,
            MyRidesController,
            TrustController,
            TrustAdminController,
            AdminController,
        ],
        dependencies=DEPENDENCIES,
        exception_handlers=exception_handlers(),
        # After the auth middleware (JWTAuth inserts itself first), so keys are per caller.
        middleware=[idempotency_middleware],
        before_request=reject_repeated_parameters,
        on_app_init=[jwt_auth.on_app_init],
        lifespan=[lifespan],
        request_max_body_size=settings.request_max_body_bytes,
        request_class=StrictJSONRequest,
        openapi_config=openapi_config(),
        state=State(
            {
                "settings": settings,
                "jwt_auth": jwt_auth,
                "clock": clock,
                "funding": funding_provider(settings.funding_provider),
                "trust": settings.trust(),
                "rides": ride_config(settings),
            }
        ),
        logging_config=None,
        debug=False,
    )
    # Wrap the whole handler, not just the routes: 404s and 405s get a request id and a log line.
    methods = methods_by_template(app)
    app.asgi_handler = request_id_middleware(head_as_get(app.asgi_handler, methods))
    return app


def methods_by_template(app: Litestar) -> dict[str, frozenset[str]]:
    """Each path's methods, by the template routing puts in the scope (`{id}`, where a route's
    path says `{id:uuid}`)."""
    return {route.path_format: frozenset(route.methods) for route in app.routes}


def head_as_get(app: ASGIApp, methods: Mapping[str, frozenset[str]]) -> ASGIApp:
    """HEAD is GET without the body (RFC 9110 9.3.2: every general-purpose server supports
    both): the route is asked for GET, and the HTTP server, which still sees HEAD, sends the
    answer's head alone, its Content-Length that of the body a GET gets. Litestar answered
    HEAD on a GET route with 405.

    So the Allow header of an OPTIONS or 405 answer names HEAD wherever it names GET. An OPTIONS
    answer names every method of its route (`methods`, by path template): Litestar's named
    only those of the route's first handlers when a controller added more to the same path."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            if scope["method"] == "HEAD":
                scope = {**scope, "method": "GET"}
            elif scope["method"] != "GET":  # OPTIONS, or a method the route may not allow
                send = _allowing_head(scope, send, methods, options=scope["method"] == "OPTIONS")
        await app(scope, receive, send)

    return handle


def _allowing_head(
    scope: Scope, send: Send, methods: Mapping[str, frozenset[str]], *, options: bool
) -> Send:
    async def send_allowing_head(message: Message) -> None:
        # Only OPTIONS and 405 answers say what is allowed (every other POST passes untouched).
        if message["type"] == "http.response.start" and (options or message["status"] == 405):
            headers = [(name, value) for name, value in message.get("headers", ())]
            allow = next((value for name, value in headers if name.lower() == b"allow"), None)
            if allow is not None:
                allowed = set(allow.decode("latin-1").replace(" ", "").split(","))
                if options:
                    allowed |= methods.get(scope.get("path_template", ""), frozenset())
                if "GET" in allowed:
                    allowed.add("HEAD")
                header = ", ".join(sorted(allowed)).encode("latin-1")
                headers = [(n, v) for n, v in headers if n.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", header)]}
        await send(message)

    return send_allowing_head

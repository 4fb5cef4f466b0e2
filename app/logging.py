"""Structured logs: JSON in prod, readable in dev, a request id on every line."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING

import structlog
from litestar.enums import ScopeType

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

    from app.settings import Settings

REQUEST_ID_HEADER = "x-request-id"
#: The status logged for a request cut off before it was answered (nginx's convention).
CLIENT_CLOSED_REQUEST = 499
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

log = structlog.get_logger("copool.http")
#: The stdlib logger behind `log`: asked first, so a request line below the level costs nothing.
_http_logger = logging.getLogger("copool.http")


def configure_logging(settings: Settings) -> None:
    """Send structlog and stdlib (uvicorn, arq, sqlalchemy) records through one renderer."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.env == "prod"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # We log each request ourselves, with its id; uvicorn's access line would say it twice.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for name in ("arq.worker", "arq.jobs"):
        arq_logger = logging.getLogger(name)
        arq_logger.filters[:] = [f for f in arq_logger.filters if not isinstance(f, QuietCron)]
        arq_logger.addFilter(QuietCron())


#: arq's lines for a job starting (`→ ref(args)`) and finishing (`← ref ● result`).
_ARQ_JOB_LINES = frozenset({"%6.2fs → %s(%s)%s", "%6.2fs ← %s ● %s"})


class QuietCron(logging.Filter):
    """Routine periodic runs are DEBUG; a run that did something (a positive count) stays INFO.

    arq logs every job's start and finish at INFO; a cron job's `ref` is `cron:<function>`
    (a queued job's is `<job id>:<function>`), which is how a periodic run is recognised.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.msg not in _ARQ_JOB_LINES:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        ref = str(args[1]) if len(args) > 1 else ""
        if not ref.startswith("cron:"):
            return True  # a queued job, not a periodic one
        finished = record.msg.startswith("%6.2fs ←")
        if finished and _did_something(args[-1]):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _did_something(result: object) -> bool:
    """A sweep answers how many things it handled: more than zero is worth a line."""
    try:
        return int(str(result)) > 0
    except ValueError:
        return False


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Give every HTTP request an id (the client's X-Request-ID if sane), log it, echo it back."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        # 128 random bits as 32 hex digits, like uuid4().hex at a quarter of its cost.
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else os.urandom(16).hex()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        answering = cut_off = False

        async def receive_watching() -> ReceiveMessage:
            nonlocal cut_off
            message = await receive()
            # Cut off before any answer: the client left, or the server refused the rest of the
            # request (a broken body: uvicorn answered 400 itself). Whatever the app answers
            # now reaches nobody, so it is not the status of this request.
            cut_off = cut_off or (message["type"] == "http.disconnect" and not answering)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, answering
            if message["type"] == "http.response.start":
                answering = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await app(scope, receive_watching, send_with_id)
        finally:
            # structlog runs its processors (timestamp, context) before the level is checked.
            if _http_logger.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    method=scope.get("method", ""),
                    path=scope["path"],
                    status=CLIENT_CLOSED_REQUEST if cut_off else status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            structlog.contextvars.clear_contextvars()

    return middleware

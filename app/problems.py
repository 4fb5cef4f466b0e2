"""Every error the API gives is RFC 9457 problem details with a stable `type` code.

Domain errors are mapped here, once, by their category; services never raise HTTP exceptions.
This module imports no domain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.errors import Category, DomainError

PROBLEM_JSON = "application/problem+json"

log = structlog.get_logger("copool.errors")


#: The one place where a category becomes an HTTP status.
CATEGORY_STATUS: dict[Category, int] = {
    Category.INVALID: 422,
    Category.UNAUTHENTICATED: 401,
    Category.FORBIDDEN: 403,
    Category.NOT_FOUND: 404,
    Category.CONFLICT: 409,
    Category.PAYMENT_REQUIRED: 402,
    Category.RATE_LIMITED: 429,
    Category.UNAVAILABLE: 503,
}

_STATUS_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    402: "insufficient-funds",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "request-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
    500: "internal-error",
    503: "service-unavailable",
}


def problem_type(status: int) -> str:
    """The `type` code of a problem copool gives for an HTTP status (domain errors: their own)."""
    return _STATUS_TYPES.get(status, "error")


def problem_response(
    *,
    status: int,
    type_: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def _validation_errors(exc: ValidationException) -> list[dict[str, str]]:
    """Which field, and why: Litestar reports a missing field against the whole body."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors = []
    for item in extra:
        if isinstance(item, dict):
            message = str(item.get("message", "invalid"))
            field = str(item.get("key") or "body")
            missing = _MISSING_FIELD.search(message)
            if field == "data":
                field = missing.group(1) if missing else "body"
                if message == repr("data"):  # no body at all: Litestar's KeyError('data')
                    message = "a JSON body is required"
            errors.append({"field": field, "message": message})
    return errors


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    extra: dict[str, Any] = {}
    if status == 400:
        # Our contract: anything malformed in what the client sent (JSON, fields, query) is 422.
        status = 422
        extra["errors"] = _validation_errors(exc) if isinstance(exc, ValidationException) else []
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = exc.detail if exc.detail and exc.detail != title else title
    headers = {k: str(v) for k, v in (exc.headers or {}).items()}
    return problem_response(
        status=status,
        type_=problem_type(status),
        title=title,
        detail=str(detail),
        headers=headers or None,
        **extra,
    )


def handle_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    status = CATEGORY_STATUS[exc.category]
    headers = {"Retry-After": "1"} if status in {429, 503} else None
    return problem_response(
        status=status,
        type_=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers=headers,
        **exc.extra,
    )


def handle_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The database (or another backing service) cannot be reached: not the client's fault."""
    log.error("backing service unavailable", error=str(exc), path=request.url.path)
    return problem_response(
        status=503,
        type_="service-unavailable",
        title="Service Unavailable",
        detail="A backing service is unreachable; retry shortly.",
        headers={"Retry-After": "5"},
    )


#: SQLSTATEs that say "the database is busy or slow", not "this request is wrong": deadlock,
#: serialization failure, statement timeout (query canceled), lock timeout, too many connections.
BUSY_SQLSTATES = frozenset({"40P01", "40001", "57014", "55P03", "53300"})


def handle_database_error(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[Any]:
    """A database error the use case did not handle: 503 when the database is the cause."""
    cause = exc.orig.__cause__ if exc.orig is not None else None
    # A connection lost mid-statement (the server went away) is the database failing, not us.
    if exc.connection_invalidated or getattr(cause, "sqlstate", None) in BUSY_SQLSTATES:
        return handle_unavailable(request, exc)
    return handle_internal_error(request, exc)


def handle_internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("unhandled exception", exc_info=exc, path=request.url.path)
    return problem_response(
        status=500,
        type_="internal-error",
        title="Internal Server Error",
        detail="Something went wrong on our side; it has been logged.",
    )


def exception_handlers() -> dict[type[Exception] | int, Any]:
    handlers: dict[type[Exception] | int, Any] = {
        HTTPException: handle_http_exception,
        Exception: handle_internal_error,
        DBAPIError: handle_database_error,
        OperationalError: handle_unavailable,
        InterfaceError: handle_unavailable,
        PoolTimeout: handle_unavailable,
        OSError: handle_unavailable,
    }
    handlers[DomainError] = handle_domain_error
    return handlers


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem answers a route can give."""
    return {
        status: ResponseSpec(
            data_container=ProblemDetail,
            media_type=PROBLEM_JSON,
            generate_examples=False,
            description=f"{HTTPStatus(status).phrase} (application/problem+json, "
            f"type `{problem_type(status)}` or a domain code)",
        )
        for status in statuses
    }


@dataclass
class ProblemDetail:
    type: str
    title: str
    status: int
    detail: str

"""Every error the API gives is RFC 9457 problem details with a stable `type` code.

Domain exceptions are mapped here, once; services never raise HTTP exceptions.
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
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.accounts.service import EmailTaken, InvalidCredentials
from payments import errors as pay

PROBLEM_JSON = "application/problem+json"

log = structlog.get_logger("copool.errors")


@dataclass(frozen=True, slots=True)
class Problem:
    status: int
    type: str
    title: str


#: One row per domain exception: how the API tells the client.
DOMAIN_PROBLEMS: dict[type[Exception], Problem] = {
    EmailTaken: Problem(409, "email-taken", "Email already registered"),
    InvalidCredentials: Problem(401, "invalid-credentials", "Invalid credentials"),
    pay.InsufficientFunds: Problem(402, "insufficient-funds", "Insufficient funds"),
    pay.PaymentDeclined: Problem(402, "payment-declined", "Payment declined"),
    pay.UnknownCurrency: Problem(422, "unknown-currency", "Unknown currency"),
    pay.CurrencyMismatch: Problem(422, "currency-mismatch", "Currency mismatch"),
    pay.InvalidAmount: Problem(422, "invalid-amount", "Invalid amount"),
    pay.TransferIdConflict: Problem(409, "transfer-id-conflict", "Transfer id already used"),
    pay.TransferNotFound: Problem(404, "not-found", "Not Found"),
    pay.HoldNotPending: Problem(409, "hold-not-pending", "Hold is not pending"),
    pay.HoldExpired: Problem(409, "hold-expired", "Hold expired"),
    pay.RefundExceedsCaptured: Problem(409, "refund-exceeds-captured", "Refund too large"),
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
        type_=_STATUS_TYPES.get(status, "error"),
        title=title,
        detail=str(detail),
        headers=headers or None,
        **extra,
    )


def handle_domain_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    problem = next(
        (p for cls, p in DOMAIN_PROBLEMS.items() if isinstance(exc, cls)),
        Problem(409, "conflict", "Conflict"),
    )
    extra = getattr(exc, "problem_extra", None) or {}
    return problem_response(
        status=problem.status,
        type_=problem.type,
        title=problem.title,
        detail=str(exc) or problem.title,
        **extra,
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
        OperationalError: handle_unavailable,
        InterfaceError: handle_unavailable,
        PoolTimeout: handle_unavailable,
        OSError: handle_unavailable,
    }
    for cls in DOMAIN_PROBLEMS:
        handlers[cls] = handle_domain_exception
    return handlers


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem answers a route can give."""
    return {
        status: ResponseSpec(
            data_container=ProblemDetail,
            media_type=PROBLEM_JSON,
            description=f"{HTTPStatus(status).phrase} (application/problem+json, "
            f"type `{_STATUS_TYPES.get(status, 'error')}` or a domain code)",
        )
        for status in statuses
    }


@dataclass
class ProblemDetail:
    type: str
    title: str
    status: int
    detail: str

"""The base of every domain error (kernel: imports no domain).

A domain error says what went wrong in the product's words and carries a category; app/problems.py
maps categories to HTTP problem details once, so no table has to know every domain's errors.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class Category(StrEnum):
    """What kind of failure it is, independent of any transport."""

    INVALID = "invalid"  # 422: the request can never succeed as sent
    UNAUTHENTICATED = "unauthenticated"  # 401
    FORBIDDEN = "forbidden"  # 403
    NOT_FOUND = "not_found"  # 404: absent, or not the caller's to see
    CONFLICT = "conflict"  # 409: the current state forbids it
    PAYMENT_REQUIRED = "payment_required"  # 402: money that is not there, or refused
    RATE_LIMITED = "rate_limited"  # 429
    UNAVAILABLE = "unavailable"  # 503: a backing service failed; retry later


class DomainError(Exception):
    """Raised by services; `code` is the stable problem `type`, `title` its short name."""

    category: ClassVar[Category] = Category.CONFLICT
    code: ClassVar[str] = "conflict"
    title: ClassVar[str] = "Conflict"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        #: Extra members of the problem document (e.g. `errors`, `retry_after_s`).
        self.extra = extra

    @property
    def detail(self) -> str:
        return str(self.args[0])


class ServiceBusy(DomainError):
    """The database kept refusing the work (deadlocks, serialization failures); retry shortly."""

    category = Category.UNAVAILABLE
    code = "service-unavailable"
    title = "Service Unavailable"


def body_errors(messages: list[str]) -> list[dict[str, str]]:
    """What is wrong with a request body, in the shape a 422 problem's `errors` documents."""
    return [{"field": "body", "message": message} for message in messages]

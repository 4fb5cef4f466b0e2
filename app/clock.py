"""The one clock (kernel). Services take `now` as a parameter; the API and the jobs read it here,
and tests replace it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)

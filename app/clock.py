"""The one clock (kernel). Services take `now` as a parameter; the API and the jobs read it here,
and tests replace it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def in_utc(moment: datetime) -> datetime:
    """The same instant in UTC (answers say times in UTC, whatever offset a client sent).

    An instant beyond datetime's range in UTC (year 1 at +14:00, year 9999 at -14:00) comes back
    as the range's edge: it is as far out of every window a service checks."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if moment.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=UTC)

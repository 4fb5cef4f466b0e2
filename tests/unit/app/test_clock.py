"""in_utc: the same instant in UTC, and the range's edge for an instant beyond it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from app.clock import in_utc

OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(timezones=OFFSETS))
def test_the_same_instant_in_utc_or_the_edge_it_lies_beyond(moment: datetime) -> None:
    utc = in_utc(moment)
    assert utc.tzinfo is UTC
    if datetime.min.replace(tzinfo=UTC) < utc < datetime.max.replace(tzinfo=UTC):
        assert utc == moment
    else:  # beyond the range in UTC, or at its very edge
        assert utc in (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


def test_an_instant_before_year_1_in_utc_is_the_first_instant() -> None:
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
    assert in_utc(early) == datetime.min.replace(tzinfo=UTC)
    assert in_utc(late) == datetime.max.replace(tzinfo=UTC)
    beijing = datetime(2026, 12, 3, 18, 0, tzinfo=timezone(timedelta(hours=8)))
    assert in_utc(beijing) == datetime(2026, 12, 3, 10, 0, tzinfo=UTC)

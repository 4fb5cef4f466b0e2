"""How /v1/health judges the worker from its last beat (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.health import worker_health

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def beat(ago_s: float) -> bytes:
    return (NOW - timedelta(seconds=ago_s)).isoformat().encode()


def test_a_recent_beat_is_ok_and_three_missed_beats_are_stale() -> None:
    assert worker_health(True, beat(5), NOW, 10).status == "ok"
    assert worker_health(True, beat(30), NOW, 10).status == "ok"
    assert worker_health(True, beat(31), NOW, 10).status == "stale"


def test_no_beat_is_absent_and_no_redis_is_unknown() -> None:
    assert worker_health(True, None, NOW, 10).status == "absent"
    assert worker_health(False, None, NOW, 10).status == "unknown"

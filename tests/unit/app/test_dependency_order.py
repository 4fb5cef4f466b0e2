"""Dependencies are resolved one after another, never in a task group per request (app/deps.py),
and generator dependencies are still cleaned up after the response."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar import Litestar, get
from litestar._kwargs import kwargs_model
from litestar.di import NamedDependency, Provide
from litestar.testing import TestClient

import app.deps  # noqa: F401 - installs the in-order resolution


def test_independent_dependencies_resolve_in_order_without_a_task_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_task_group() -> None:
        raise AssertionError("a task group was created to resolve dependencies")

    monkeypatch.setattr(kwargs_model, "create_task_group", no_task_group)
    events: list[str] = []

    def first() -> int:
        events.append("first")
        return 1

    async def second() -> int:
        events.append("second")
        return 2

    def scoped() -> Iterator[int]:
        events.append("open")
        yield 3
        events.append("close")

    def combined(first: NamedDependency[int], scoped: NamedDependency[int]) -> int:
        return first * 10 + scoped

    @get("/", sync_to_thread=False)
    def handler(
        first: NamedDependency[int],
        second: NamedDependency[int],
        scoped: NamedDependency[int],
        combined: NamedDependency[int],
    ) -> dict[str, int]:
        return {"sum": first + second + scoped, "combined": combined}

    app = Litestar(
        [handler],
        dependencies={
            "first": Provide(first, sync_to_thread=False),
            "second": Provide(second),
            "scoped": Provide(scoped),
            "combined": Provide(combined, sync_to_thread=False),
        },
    )
    with TestClient(app) as client:
        answer = client.get("/")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"sum": 6, "combined": 13}
    assert sorted(events[:3]) == ["first", "open", "second"]
    assert events[3:] == ["close"]

"""A batch's chunks in threads: the same answer as one thread, chunk for chunk."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import matching.corridor as corridor
import matching.insertion as insertion
import matching.threads as threads
from matching.assignment import propose_matches
from matching.feasibility import InsertionLimits
from matching.routing import Earth, EstimatingRouter
from matching.synthetic import intercity_batch

ROUTER = EstimatingRouter(average_speed_kmh=80.0, earth=Earth.SPHERE)
LIMITS = InsertionLimits(max_added_delay_s=1_800.0)


def test_chunks_come_back_in_order_from_threads_other_than_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threads, "WORKERS", 2)  # (a one-core machine has one)
    seen: list[int] = []

    def square(x: int) -> int:
        seen.append(threading.get_ident())
        return x * x

    assert threads.map_chunks(square, range(50)) == [x * x for x in range(50)]
    assert threading.get_ident() not in seen
    assert threads.map_chunks(square, [7]) == [49]  # one chunk: no thread needed
    assert seen[-1] == threading.get_ident()


def test_chunks_that_map_chunks_of_their_own_run_them_in_their_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More outer chunks than pool threads, each mapping inner chunks: every pool thread busy
    with an outer chunk would wait for ever on the pool for its inner ones; they run inline."""
    monkeypatch.setattr(threads, "WORKERS", 2)

    def outer(x: int) -> list[int]:
        return threads.map_chunks(lambda y: x * 10 + y, range(3))

    answers: list[list[list[int]]] = []
    caller = threading.Thread(
        target=lambda: answers.append(threads.map_chunks(outer, range(4 * threads.CORES))),
        daemon=True,  # (a deadlock must fail the test, not hang the suite)
    )
    caller.start()
    caller.join(timeout=30)
    assert answers == [[[x * 10 + y for y in range(3)] for x in range(4 * threads.CORES)]]


@pytest.mark.parametrize("max_new", [1, 4])
def test_an_intercity_batch_in_many_chunks_is_assigned_as_in_one_thread(
    monkeypatch: pytest.MonkeyPatch, max_new: int
) -> None:
    """Small chunks (many trips' corridor joins, many pairs' insertions, the corridors' parts
    of the assignment) in the pool's threads: the same proposals and plans as one thread."""
    batch = intercity_batch(np.random.default_rng(5), trips=120, riders=600)
    monkeypatch.setattr(corridor, "_TRIPS_PER_CHUNK", 8)
    monkeypatch.setattr(insertion, "_PAIRS_PER_CHUNK", 256)

    def assign(workers: int) -> tuple[object, object]:
        monkeypatch.setattr(threads, "WORKERS", workers)
        result = propose_matches(
            batch.trips,
            batch.riders,
            router=ROUTER,
            limits=LIMITS,
            resolution=5,
            max_new_riders_per_trip=max_new,
        )
        return result.proposals, result.plans

    alone = assign(1)
    assert len(alone[0]) > 100  # (proposals: a batch where the chunks matter)
    assert assign(2) == alone

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


@pytest.mark.parametrize("max_new", [1, 4])
def test_an_intercity_batch_in_many_chunks_is_assigned_as_in_one_thread(
    monkeypatch: pytest.MonkeyPatch, max_new: int
) -> None:
    """Small chunks (many trips' corridor joins, many pairs' insertions, the corridors' parts
    of the assignment) in four threads: the same proposals and plans as one thread."""
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
    assert assign(4) == alone

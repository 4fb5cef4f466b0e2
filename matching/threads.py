"""A batch's array work spread over the machine's cores.

numpy's element-wise work on large arrays and scipy's dense assignment solver run without the
GIL, so independent chunks of a batch (trips of the corridor join, pairs of the feasibility
check, separate parts of the seat assignment) run at once in threads.
The chunks' answers come back in the chunks' order: the result is the same as one thread's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may run on (Linux)
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: Threads for a batch's chunks: the cores this process may use, at most 4 (unmeasured past 2:
#: this machine has 2). WORKERS = 1 runs every chunk in the caller's thread (the benchmark's
#: baseline); the pool keeps the size it was made with.
CORES = max(1, min(4, _cores()))
WORKERS = CORES

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_inside = threading.local()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                CORES, thread_name_prefix="copool-matching", initializer=_mark_pool_thread
            )
        return _executor


def _mark_pool_thread() -> None:
    _inside.pool = True


def map_chunks(work: Callable[[T], R], chunks: Iterable[T]) -> list[R]:
    """work(chunk) for every chunk, in order; in threads when there are several. Called from a
    pool thread (work that maps chunks of its own) it runs them there, one after another: a
    pool thread waiting on the pool could wait for ever."""
    chunks = list(chunks)
    if len(chunks) < 2 or WORKERS == 1 or getattr(_inside, "pool", False):
        return [work(chunk) for chunk in chunks]
    return list(_pool().map(work, chunks))

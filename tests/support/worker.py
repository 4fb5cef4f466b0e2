"""Stopping a real arq worker in a test without cutting a job short."""

from __future__ import annotations

import asyncio
import time

from arq.worker import Worker


async def finish_jobs(worker: Worker, timeout_s: float = 20.0) -> None:
    """Let the jobs in flight end before the worker is stopped. What a job did is visible once its
    unit of work commits (or its count rises), while it still records its result in Redis; a
    job cancelled there failed the shutdown (a connect cut short, a cancelled gather), not the
    test's claim."""
    deadline = time.monotonic() + timeout_s
    # (each turn: the jobs in flight now; one may have started another meanwhile)
    while (pending := [t for t in worker.tasks.values() if not t.done()]) and (
        left := deadline - time.monotonic()
    ) > 0:
        await asyncio.wait(pending, timeout=left)

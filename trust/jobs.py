"""This domain's arq jobs, gathered by workers/settings.py (none yet: no use cases so far)."""

from __future__ import annotations

from typing import Any

from arq.cron import CronJob

#: Jobs enqueued by name after a unit of work commits.
FUNCTIONS: list[Any] = []
#: Periodic sweeps, each idempotent.
SWEEPS: list[CronJob] = []

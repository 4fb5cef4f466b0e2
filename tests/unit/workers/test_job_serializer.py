"""arq's job records through our msgpack serializer: a failed job's exception is stored (as its
repr), not dropped with an error."""

from __future__ import annotations

import pytest
from arq.worker import JobExecutionFailed

from workers.settings import job_deserializer, job_serializer


def test_a_job_record_round_trips() -> None:
    record = {"t": 1, "f": "settle_pool", "a": ["pool"], "k": {}, "s": True, "r": "settled"}
    assert job_deserializer(job_serializer(record)) == record


def test_a_failed_job_keeps_its_exception_as_its_repr() -> None:
    failure = JobExecutionFailed("max 1 retries exceeded")
    record = {"f": "cron:heartbeat", "s": False, "r": failure}
    assert job_deserializer(job_serializer(record))["r"] == repr(failure)


def test_anything_else_a_job_cannot_carry_is_refused() -> None:
    with pytest.raises(NotImplementedError, match="cannot carry a object"):
        job_serializer({"r": object()})

"""The Redis admission gate (groupbuy/admission.py) against a real Redis: exact counting near
the cap, and no round trip per join while a pool is far from it."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from groupbuy.admission import Admission, Admit, key


async def test_the_gate_counts_exactly_near_the_cap(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        gate = Admission(redis, plenty=10_000)
        pool = uuid.uuid4()
        assert await gate.admit(pool, 1) == (Admit.UNKNOWN, 0)
        await gate.seed(pool, 3)
        assert await gate.admit(pool, 2) == (Admit.ADMITTED, 1)
        assert await gate.admit(pool, 2) == (Admit.FULL, 1)
        await gate.give_back(pool, 2)
        assert await gate.admit(pool, 3) == (Admit.ADMITTED, 0)
        await gate.close(pool)
        assert await gate.admit(pool, 1) == (Admit.CLOSED, 0)
    finally:
        await redis.aclose()


async def test_a_pool_far_from_its_cap_skips_the_count_for_a_while(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        gate = Admission(redis, plenty=1_000, plenty_for_s=60)
        roomy, tight = uuid.uuid4(), uuid.uuid4()
        await gate.seed(roomy, 5_000)
        await gate.seed(tight, 1_000)
        assert await gate.admit(roomy, 1) == (Admit.ADMITTED, 4_999)
        # Counted once; then let through without a round trip (the count stays as it was).
        for _ in range(5):
            assert await gate.admit(roomy, 1) == (Admit.PLENTY, 0)
        assert int(await redis.get(key(roomy))) == 4_999
        # Within `plenty` of the cap every join is counted.
        for left in (999, 998, 997):
            assert await gate.admit(tight, 1) == (Admit.ADMITTED, left)
        # Closing the pool ends the skipping at once.
        await gate.close(roomy)
        assert await gate.admit(roomy, 1) == (Admit.CLOSED, 0)
    finally:
        await redis.aclose()

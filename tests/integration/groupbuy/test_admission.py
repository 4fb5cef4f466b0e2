"""The Redis admission gate (groupbuy/admission.py) against a real Redis: exact counting near
the cap, no round trip per join while a pool is far from it, and one read of the pool's row
when a crowd finds the count gone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from groupbuy.admission import Admission, Admit, key
from tests.support.ledger import fund
from tests.support.pools import member, open_pool
from tests.support.trust import TrustWorld

#: Members joining at once.
CROWD = 30


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_gate_counts_exactly_near_the_cap(redis: Redis) -> None:
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


async def test_a_pool_far_from_its_cap_skips_the_count_for_a_while(redis: Redis) -> None:
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


async def test_joins_finding_no_count_share_one_read_of_the_pool(redis: Redis) -> None:
    """A crowd meeting an expired count reads the pool's row once per process, not once each."""
    gate = Admission(redis, plenty=10_000)
    pool = uuid.uuid4()
    reads = 0
    release = asyncio.Event()

    async def read() -> int:
        nonlocal reads
        reads += 1
        await release.wait()
        return 50

    crowd = [asyncio.create_task(gate.refill(pool, read)) for _ in range(100)]
    await asyncio.sleep(0.01)
    assert reads == 1
    assert not any(join.done() for join in crowd)
    release.set()
    assert await asyncio.gather(*crowd) == [True] * 100
    assert reads == 1
    assert await gate.admit(pool, 1) == (Admit.ADMITTED, 49)
    # Once it is done, a later miss (the count expired again) reads again.
    await redis.delete(key(pool))
    assert await gate.refill(pool, read) is True
    assert reads == 2


async def test_a_refill_that_finds_the_pool_closed_closes_the_gate(redis: Redis) -> None:
    gate = Admission(redis, plenty=10_000)
    pool = uuid.uuid4()

    async def closed() -> None:
        return None

    assert await asyncio.gather(*(gate.refill(pool, closed) for _ in range(3))) == [False] * 3
    assert await gate.admit(pool, 1) == (Admit.CLOSED, 0)


async def test_a_failed_refill_fails_every_waiting_join_and_the_next_one_reads_again(
    redis: Redis,
) -> None:
    gate = Admission(redis, plenty=10_000)
    pool = uuid.uuid4()
    reads = 0

    async def failing() -> int:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        raise LookupError("no such pool")

    answers = await asyncio.gather(
        *(gate.refill(pool, failing) for _ in range(5)), return_exceptions=True
    )
    assert reads == 1
    assert all(isinstance(answer, LookupError) for answer in answers)
    # A join that went away does not cancel the read the others wait for.
    reads = 0

    async def slow() -> int:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return 7

    leaver = asyncio.create_task(gate.refill(pool, slow))
    stayer = asyncio.create_task(gate.refill(pool, slow))
    await asyncio.sleep(0.01)
    leaver.cancel()
    assert await stayer is True
    assert reads == 1
    assert await gate.admit(pool, 7) == (Admit.ADMITTED, 0)


async def test_a_crowd_meeting_an_expired_count_reads_the_pool_once(
    world: TrustWorld, redis: Redis
) -> None:
    """Over HTTP, both backends: joins that find the gate's count gone (it expires every
    `ttl_s`) wait for one read of the pool's row; before, each read it on a connection of its
    own, and every expiry under a crowd opened new database connections by the dozen."""
    organizer, organizer_h = await world.user(roles=["organizer"])
    await fund(world.sessionmaker, organizer, 1_000_000, "CNY", now=world.clock())
    pool_id = (await open_pool(world, organizer_h, max_quantity=1_000))["id"]
    crowd = [(await member(world, 10_000))[1] for _ in range(CROWD)]
    app = world.client.app
    engine: AsyncEngine = app.state.engine
    await redis.delete(key(uuid.UUID(pool_id)))  # the count expired
    reads = 0

    def count_pool_reads(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        nonlocal reads
        if statement.lstrip().startswith("SELECT pools.status, pools.deadline"):
            reads += 1

    event.listen(engine.sync_engine, "before_cursor_execute", count_pool_reads)
    try:
        answers = await asyncio.gather(
            *(
                world.client.post(f"/v1/pools/{pool_id}/joins", json={"quantity": 1}, headers=h)
                for h in crowd
            )
        )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count_pool_reads)
    assert [answer.status_code for answer in answers] == [201] * CROWD
    assert reads == 1

"""The Redis admission gate (groupbuy/admission.py) against a real Redis: exact counting near
the cap, no round trip per join while a pool is far from it, and one read of the pool's row
when a crowd finds the count gone."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import event

from app.errors import ServiceBusy
from groupbuy import service
from groupbuy.admission import Admission, Admit, Room, key
from groupbuy.errors import PoolClosed
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


ROOM = Room(left=50, deadline=datetime(2030, 1, 1, tzinfo=UTC))


async def test_joins_finding_no_count_share_one_read_of_the_pool(redis: Redis) -> None:
    """A crowd meeting an expired count reads the pool's row once per process, not once each."""
    gate = Admission(redis, plenty=10_000)
    pool = uuid.uuid4()
    reads = 0
    release = asyncio.Event()

    async def read() -> Room:
        nonlocal reads
        reads += 1
        await release.wait()
        return ROOM

    crowd = [asyncio.create_task(gate.refill(pool, read)) for _ in range(100)]
    await asyncio.sleep(0.01)
    assert reads == 1
    assert not any(join.done() for join in crowd)
    release.set()
    assert await asyncio.gather(*crowd) == [ROOM] * 100
    assert reads == 1
    assert await gate.admit(pool, 1) == (Admit.ADMITTED, 49)
    # Once it is done, a later miss (the count expired again) reads again.
    await redis.delete(key(pool))
    assert await gate.refill(pool, read) == ROOM
    assert reads == 2


async def test_a_refill_that_finds_the_pool_decided_closes_the_gate(redis: Redis) -> None:
    gate = Admission(redis, plenty=10_000)
    pool, missing = uuid.uuid4(), uuid.uuid4()
    decided = ROOM._replace(left=None)

    async def read() -> Room:
        return decided

    async def nothing() -> None:
        return None

    assert await asyncio.gather(*(gate.refill(pool, read) for _ in range(3))) == [decided] * 3
    assert await gate.admit(pool, 1) == (Admit.CLOSED, 0)
    # No such pool: nothing is stored (each join answers 404 itself).
    assert await gate.refill(missing, nothing) is None
    assert await gate.admit(missing, 1) == (Admit.UNKNOWN, 0)


async def test_a_failed_refill_fails_every_waiting_join_and_the_next_one_reads_again(
    redis: Redis,
) -> None:
    gate = Admission(redis, plenty=10_000)
    pool = uuid.uuid4()
    reads = 0

    async def failing() -> Room:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        raise OSError("the database went away")

    answers = await asyncio.gather(
        *(gate.refill(pool, failing) for _ in range(5)), return_exceptions=True
    )
    assert reads == 1
    assert all(isinstance(answer, OSError) for answer in answers)
    # A join that went away does not cancel the read the others wait for.
    reads = 0

    async def slow() -> Room:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return ROOM._replace(left=7)

    leaver = asyncio.create_task(gate.refill(pool, slow))
    stayer = asyncio.create_task(gate.refill(pool, slow))
    await asyncio.sleep(0.01)
    leaver.cancel()
    assert (await stayer).left == 7
    assert reads == 1
    assert leaver.cancelled()
    assert await gate.admit(pool, 7) == (Admit.ADMITTED, 0)


async def test_a_refill_stopped_with_the_app_refuses_its_joins_with_a_retry(redis: Redis) -> None:
    """The app's shutdown stops the read under way: the joins waiting for it are answered 503
    (retry), not left with the read's cancellation."""
    gate = Admission(redis, plenty=10_000)
    pool = uuid.uuid4()

    async def stuck() -> Room:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    waiting = [asyncio.create_task(gate.refill(pool, stuck)) for _ in range(3)]
    await asyncio.sleep(0.01)
    await gate.aclose()
    answers = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(answer, ServiceBusy) for answer in answers), answers


class CountingGate(Admission):
    """The gate, noting every verdict it gave (a spy: it answers exactly as Admission does)."""

    verdicts: list[Admit]

    async def admit(self, pool_id: uuid.UUID, quantity: int) -> tuple[Admit, int]:
        verdict, left = await super().admit(pool_id, quantity)
        self.verdicts.append(verdict)
        return verdict, left


async def test_a_crowd_meeting_an_expired_count_reads_the_pool_once(
    world: TrustWorld, redis: Redis
) -> None:
    """Both backends, the joins at once in one process (as a server's): those that find the
    gate's count gone (it expires every `ttl_s`) wait for one read of the pool's row; before,
    each read it on a connection of its own, and every expiry under a crowd opened new database
    connections by the dozen."""
    organizer, organizer_h = await world.user(roles=["organizer"])
    await fund(world.sessionmaker, organizer, 1_000_000, "CNY", now=world.clock())
    pool_id = uuid.UUID((await open_pool(world, organizer_h, max_quantity=1_000))["id"])
    crowd = [(await member(world, 10_000))[0] for _ in range(CROWD)]
    gate = CountingGate(redis)
    gate.verdicts = []
    engine = world.sessionmaker.kw["bind"]
    reads: list[str] = []

    def note_pool_reads(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if re.search(r"\bFROM pools\b", statement) and "FOR UPDATE" not in statement:
            reads.append(statement)

    async def join(user_id: uuid.UUID, now: datetime) -> Any:
        return await service.join_pool(
            world.uow,
            pool_id=pool_id,
            user_id=user_id,
            quantity=1,
            request_id=None,
            config=world.client.app.state.trust,
            schedule=None,
            admission=gate,
            now=now,
        )

    event.listen(engine.sync_engine, "before_cursor_execute", note_pool_reads)
    try:
        joins = await asyncio.gather(*(join(user_id, world.clock()) for user_id in crowd))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note_pool_reads)
    assert [made.quantity for made in joins] == [1] * CROWD
    assert gate.verdicts.count(Admit.UNKNOWN) == CROWD  # every one of them found no count
    refills = [r for r in reads if r.lstrip().startswith("SELECT pools.status, pools.deadline")]
    assert len(refills) == 1, reads
    # A join whose own clock is past the deadline is refused (and closes the gate).
    await redis.delete(key(pool_id))
    late = (await member(world, 10_000))[0]
    shown = (await world.client.get(f"/v1/pools/{pool_id}", headers=organizer_h)).json()
    with pytest.raises(PoolClosed):
        await join(late, datetime.fromisoformat(shown["deadline"]) + timedelta(seconds=1))
    assert await gate.admit(pool_id, 1) == (Admit.CLOSED, 0)

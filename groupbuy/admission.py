"""The admission gate in front of a pool's row: a Redis counter of the quantity a pool still has.

A flash crowd sends thousands of joins to one pool in seconds; most of them find it full. The gate
reserves quantity atomically in Redis (one Lua script: read, compare, decrement) so a join past
the cap is refused without touching the database, and only joins that can succeed queue for the
pool's row. The database stays the record and the guard: every admitted join still reserves with
the conditional UPDATE, so a wrong count can never oversell, only refuse early or admit late.

The count is a cache of `max_quantity - committed_quantity` that lives `ttl_s` seconds and is seeded
again from the database: a Redis flush, a lost give-back after a crash, or a leave are healed
within that time. All keys of one pool share a Redis Cluster hash slot (`{pool:<id>}`).

A pool far from its cap needs no gate: once the count says more than `plenty` are left, this
process lets that pool's joins through uncounted (PLENTY) for `plenty_for_s` seconds, sparing a
Redis round trip per join. The count then reads high until its next seeding, which can only make
the gate admit late, never oversell: the database refuses what does not fit.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple
from uuid import UUID

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.errors import ServiceBusy

log = structlog.get_logger("copool.groupbuy.admission")

#: The count is re-read from the database at least this often.
DEFAULT_TTL_S = 10
#: Joins of one pool one process sends to the database at once.
DEFAULT_LANE_WIDTH = 4
#: Stored instead of a count once the pool no longer takes joins.
CLOSED = -1
#: More left than this: the pool's joins skip the count for DEFAULT_PLENTY_FOR_S seconds.
DEFAULT_PLENTY = 10_000
DEFAULT_PLENTY_FOR_S = 1.0

# KEYS[1] the pool's count; ARGV[1] the quantity. Answers {outcome, left}: 0 admitted, 1 not
# enough left, 2 closed, 3 no count (ask the database).
_ADMIT = """
local left = redis.call('GET', KEYS[1])
if not left then return {3, 0} end
left = tonumber(left)
if left < 0 then return {2, 0} end
local want = tonumber(ARGV[1])
if left < want then return {1, left} end
return {0, redis.call('DECRBY', KEYS[1], want)}
"""
# Give quantity back to a count that still exists (an expired one is re-read anyway).
_GIVE_BACK = """
local left = redis.call('GET', KEYS[1])
if left and tonumber(left) >= 0 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return -1
"""


class Room(NamedTuple):
    """What the database says of a pool, for the gate: what it has left (None once it takes no
    more joins) and its deadline."""

    left: int | None
    deadline: datetime


class Admit(StrEnum):
    ADMITTED = "admitted"
    FULL = "full"
    CLOSED = "closed"
    #: The gate has no count (new pool, expired, Redis flushed or down): ask the database.
    UNKNOWN = "unknown"
    #: Far from its cap: let through without counting (nothing to give back).
    PLENTY = "plenty"


_OUTCOMES = (Admit.ADMITTED, Admit.FULL, Admit.CLOSED, Admit.UNKNOWN)


def key(pool_id: UUID) -> str:
    return f"copool:{{pool:{pool_id}}}:left"


class Admission:
    """The gate's operations; every Redis failure degrades to UNKNOWN (the database decides).

    Each process also lets at most `lane_width` joins of one pool into the database at a time
    (`lane`): the others wait here, holding no database connection, instead of queueing on the
    pool's rows inside PostgreSQL, where every waiter holds a connection and wakes on each commit.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        lane_width: int = DEFAULT_LANE_WIDTH,
        plenty: int = DEFAULT_PLENTY,
        plenty_for_s: float = DEFAULT_PLENTY_FOR_S,
    ) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._lane_width = lane_width
        self._plenty = plenty
        self._plenty_for_s = plenty_for_s
        #: Pools seen far from their cap: until when (monotonic) their joins skip the count.
        self._roomy: dict[UUID, float] = {}
        # Dropped as soon as no join of that pool is waiting or running.
        self._lanes: weakref.WeakValueDictionary[UUID, asyncio.Semaphore] = (
            weakref.WeakValueDictionary()
        )
        #: The refill under way of each pool whose count is missing.
        self._refills: dict[UUID, asyncio.Task[Room | None]] = {}
        self._admit = redis.register_script(_ADMIT)
        self._give_back = redis.register_script(_GIVE_BACK)

    def lane(self, pool_id: UUID) -> asyncio.Semaphore:
        """The pool's lane into the database in this process."""
        lane = self._lanes.get(pool_id)
        if lane is None:
            lane = asyncio.Semaphore(self._lane_width)
            self._lanes[pool_id] = lane
        return lane

    async def admit(self, pool_id: UUID, quantity: int) -> tuple[Admit, int]:
        """Take `quantity` from the pool's count if it has that much; answers the outcome and
        what the count has left (PLENTY: far from the cap, not counted)."""
        now = time.monotonic()
        roomy_until = self._roomy.get(pool_id)
        if roomy_until is not None and now < roomy_until:
            return Admit.PLENTY, 0
        try:
            outcome, left = await self._admit(keys=[key(pool_id)], args=[quantity])
        except RedisError as exc:
            log.warning("admission gate unavailable", error=str(exc))
            return Admit.UNKNOWN, 0
        verdict = _OUTCOMES[int(outcome)]
        if verdict is Admit.ADMITTED and left > self._plenty:
            if len(self._roomy) > 1_000:  # forget pools whose window passed
                self._roomy = {pool: t for pool, t in self._roomy.items() if t > now}
            self._roomy[pool_id] = now + self._plenty_for_s
        return verdict, int(left)

    async def give_back(self, pool_id: UUID, quantity: int) -> None:
        """Return quantity taken by a join that did not commit (or a join that left)."""
        try:
            await self._give_back(keys=[key(pool_id)], args=[quantity])
        except RedisError as exc:
            log.warning("admission gate unavailable", error=str(exc))

    async def seed(self, pool_id: UUID, left: int) -> None:
        """Start a count from the database's figure, unless another request already did."""
        try:
            await self._redis.set(key(pool_id), max(left, 0), ex=self._ttl_s, nx=True)
        except RedisError as exc:
            log.warning("admission gate unavailable", error=str(exc))

    async def refill(
        self, pool_id: UUID, read: Callable[[], Awaitable[Room | None]]
    ) -> Room | None:
        """Start the pool's missing count from the database: `read` answers the pool's Room (None:
        no such pool); a pool that takes no more joins closes the gate instead. Answers the Room,
        whose deadline each join checks against its own clock.

        One read per pool in this process at a time: the joins that find no count meanwhile
        wait for the read under way. The count expires every `ttl_s`, under a crowd as
        anywhere, and each join reading the pool on its own connection made every expiry a
        burst of new database connections, each a new backend to start and prepare for."""
        refill = self._refills.get(pool_id)
        if refill is None:
            refill = asyncio.create_task(self._refill(pool_id, read))
            self._refills[pool_id] = refill
            refill.add_done_callback(lambda done: self._refill_done(pool_id, done))
        try:
            # Shielded: a join that goes away does not cancel the read the others wait for.
            return await asyncio.shield(refill)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this join itself was cancelled
            # The read was (the app is stopping): the join is refused, to be retried.
            raise ServiceBusy("the join was interrupted; retry it") from None

    async def _refill(
        self, pool_id: UUID, read: Callable[[], Awaitable[Room | None]]
    ) -> Room | None:
        room = await read()
        if room is not None:
            if room.left is None:
                await self.close(pool_id)
            else:
                await self.seed(pool_id, room.left)
        return room

    def _refill_done(self, pool_id: UUID, refill: asyncio.Task[Room | None]) -> None:
        if self._refills.get(pool_id) is refill:
            del self._refills[pool_id]
        if not refill.cancelled():
            refill.exception()  # retrieved: every join waiting for it has its own answer

    async def aclose(self) -> None:
        """Stop the refills under way (before Redis and the database are closed)."""
        refills = list(self._refills.values())
        for refill in refills:
            refill.cancel()
        await asyncio.gather(*refills, return_exceptions=True)

    async def close(self, pool_id: UUID) -> None:
        """The pool was decided: refuse joins at the gate from now on."""
        self._roomy.pop(pool_id, None)
        try:
            await self._redis.set(key(pool_id), CLOSED, ex=self._ttl_s)
        except RedisError as exc:
            log.warning("admission gate unavailable", error=str(exc))

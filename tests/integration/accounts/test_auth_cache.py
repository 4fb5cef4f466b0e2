"""The per-process auth cache: TTL, invalidation, and no stale entry from a racing load."""

from __future__ import annotations

import asyncio
import random
import uuid

from app.accounts.models import Role
from app.accounts.service import AuthState
from app.auth import AuthCache

MEMBER = AuthState(roles=frozenset({Role.MEMBER}), banned=False, deactivated=False, version=0)
BANNED = AuthState(roles=frozenset({Role.MEMBER}), banned=True, deactivated=False, version=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_entry_is_reused_until_its_ttl_then_loaded_again() -> None:
    clock, loads = Clock(), []
    cache = AuthCache(ttl_s=5, clock=clock, spread=lambda: 0.0)  # the whole TTL
    user = uuid.uuid4()

    async def load(uid: uuid.UUID) -> AuthState | None:
        loads.append(uid)
        return MEMBER

    assert await cache.get(user, load) == MEMBER
    clock.now += 4.9
    assert await cache.get(user, load) == MEMBER
    assert len(loads) == 1
    clock.now += 0.2
    await cache.get(user, load)
    assert len(loads) == 2


async def test_entries_loaded_together_expire_spread_over_the_last_half_of_the_ttl() -> None:
    clock, loads = Clock(), []
    cache = AuthCache(ttl_s=10, clock=clock, spread=random.Random(7).random)
    users = [uuid.uuid4() for _ in range(200)]

    async def load(uid: uuid.UUID) -> AuthState | None:
        loads.append(uid)
        return MEMBER

    for user in users:  # a crowd arriving at once
        await cache.get(user, load)
    reloaded = []
    for _ in range(10):  # then each user again every second
        clock.now += 1.0
        before = len(loads)
        for user in users:
            await cache.get(user, load)
        reloaded.append(len(loads) - before)
    # Nobody before half the TTL; the first reloads spread over its second half, not all at
    # once at the TTL; and no entry outlives the TTL.
    assert reloaded[:4] == [0, 0, 0, 0]
    assert max(reloaded[4:]) < 100
    assert sum(reloaded[4:10]) >= len(users)


async def test_an_invalidated_user_is_loaded_again_and_absent_users_are_cached() -> None:
    cache = AuthCache(ttl_s=300)
    user, ghost = uuid.uuid4(), uuid.uuid4()
    rows: dict[uuid.UUID, AuthState] = {user: MEMBER}
    loads = 0

    async def load(uid: uuid.UUID) -> AuthState | None:
        nonlocal loads
        loads += 1
        return rows.get(uid)

    assert await cache.get(ghost, load) is None
    assert await cache.get(ghost, load) is None
    assert loads == 1
    await cache.get(user, load)
    rows[user] = BANNED
    cache.invalidate(user)
    assert await cache.get(user, load) == BANNED


async def test_a_load_that_overlaps_an_invalidation_is_not_kept() -> None:
    cache = AuthCache(ttl_s=300)
    user = uuid.uuid4()
    reading = asyncio.Event()
    release = asyncio.Event()
    rows = {user: MEMBER}

    async def slow_load(uid: uuid.UUID) -> AuthState | None:
        state = rows[uid]  # read the old row...
        reading.set()
        await release.wait()
        return state

    pending = asyncio.create_task(cache.get(user, slow_load))
    await reading.wait()
    rows[user] = BANNED  # ...the change commits and is announced meanwhile
    cache.invalidate(user)
    release.set()
    assert await pending == MEMBER  # that one request saw the old state,

    async def load(uid: uuid.UUID) -> AuthState | None:
        return rows[uid]

    assert await cache.get(user, load) == BANNED  # but it was not cached


async def test_the_cache_holds_a_bounded_number_of_users() -> None:
    cache = AuthCache(ttl_s=300, max_entries=3)

    async def load(uid: uuid.UUID) -> AuthState | None:
        return MEMBER

    users = [uuid.uuid4() for _ in range(5)]
    for user in users:
        await cache.get(user, load)
    assert len(cache._entries) == 3
    assert set(cache._entries) == set(users[2:])

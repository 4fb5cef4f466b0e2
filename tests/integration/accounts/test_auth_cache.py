"""The per-process auth cache: TTL, invalidation, and no stale entry from a racing load."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence

import pytest

from app.accounts.models import Role
from app.accounts.service import AUTH_STATES_MAX_USERS, AuthState
from app.auth import AuthCache, LoadMany
from app.errors import ServiceBusy

MEMBER = AuthState(roles=frozenset({Role.MEMBER}), banned=False, deactivated=False, version=0)
BANNED = AuthState(roles=frozenset({Role.MEMBER}), banned=True, deactivated=False, version=1)


def many(load: Callable[[uuid.UUID], Awaitable[AuthState | None]]) -> LoadMany:
    """A reader of several users that reads each with `load`."""

    async def load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        states = {uid: await load(uid) for uid in uids}
        return {uid: state for uid, state in states.items() if state is not None}

    return load_many


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

    assert await cache.get(user, many(load)) == MEMBER
    clock.now += 4.9
    assert await cache.get(user, many(load)) == MEMBER
    assert len(loads) == 1
    clock.now += 0.2
    await cache.get(user, many(load))
    assert len(loads) == 2


async def test_entries_loaded_together_expire_spread_over_the_last_half_of_the_ttl() -> None:
    clock, loads = Clock(), []
    cache = AuthCache(ttl_s=10, clock=clock, spread=random.Random(7).random)
    users = [uuid.uuid4() for _ in range(200)]

    async def load(uid: uuid.UUID) -> AuthState | None:
        loads.append(uid)
        return MEMBER

    for user in users:  # a crowd arriving at once
        await cache.get(user, many(load))
    reloaded = []
    for _ in range(10):  # then each user again every second
        clock.now += 1.0
        before = len(loads)
        for user in users:
            await cache.get(user, many(load))
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

    assert await cache.get(ghost, many(load)) is None
    assert await cache.get(ghost, many(load)) is None
    assert loads == 1
    await cache.get(user, many(load))
    rows[user] = BANNED
    cache.invalidate(user)
    assert await cache.get(user, many(load)) == BANNED


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

    pending = asyncio.create_task(cache.get(user, many(slow_load)))
    await reading.wait()
    rows[user] = BANNED  # ...the change commits and is announced meanwhile
    cache.invalidate(user)
    release.set()
    assert await pending == MEMBER  # that one request saw the old state,

    async def load(uid: uuid.UUID) -> AuthState | None:
        return rows[uid]

    assert await cache.get(user, many(load)) == BANNED  # but it was not cached


async def test_the_cache_holds_a_bounded_number_of_users() -> None:
    cache = AuthCache(ttl_s=300, max_entries=3)

    async def load(uid: uuid.UUID) -> AuthState | None:
        return MEMBER

    users = [uuid.uuid4() for _ in range(5)]
    for user in users:
        await cache.get(user, many(load))
    assert len(cache._entries) == 3
    assert set(cache._entries) == set(users[2:])


async def test_entries_in_use_are_reloaded_together_before_they_expire() -> None:
    clock, loads, batches = Clock(), [], []
    cache = AuthCache(ttl_s=5, clock=clock, spread=lambda: 0.0)
    users = [uuid.uuid4() for _ in range(300)]

    async def load(uid: uuid.UUID) -> AuthState | None:
        loads.append(uid)
        return MEMBER

    async def load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        batches.append(list(uids))
        return dict.fromkeys(uids, MEMBER)

    for user in users:
        await cache.get(user, many(load))
    for _ in range(15):  # 15 s of every user asking twice a second, a refresh every second
        for _ in range(2):
            clock.now += 0.5
            for user in users:
                assert await cache.get(user, many(load)) == MEMBER
        await cache.refresh(load_many)
    assert len(loads) == len(users)  # only the first request of each user waited for a load
    assert batches
    assert all(len(batch) == len(users) for batch in batches)
    assert len(batches) <= 15 // 3  # each entry reloaded every 3 s (TTL 5, 2 s ahead)


async def test_a_refresh_never_makes_an_entry_outlive_the_ttl_from_its_read() -> None:
    clock = Clock()
    cache = AuthCache(ttl_s=5, clock=clock, spread=lambda: 0.0)
    user = uuid.uuid4()
    rows = {user: MEMBER}

    async def load(uid: uuid.UUID) -> AuthState | None:
        return rows[uid]

    async def slow_load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        found = {uid: rows[uid] for uid in uids}  # read now...
        clock.now += 2.0  # ...answered two seconds later
        return found

    await cache.get(user, many(load))
    clock.now += 4.0
    await cache.get(user, many(load))  # in use
    assert await cache.refresh(slow_load_many) == 1
    rows[user] = BANNED  # silently: no announcement
    clock.now += 2.9  # 4.9 s after the refresh's read
    assert await cache.get(user, many(load)) == MEMBER
    clock.now += 0.2  # 5.1 s after it: the entry has expired and is read again
    assert await cache.get(user, many(load)) == BANNED


async def test_an_entry_nobody_used_since_its_read_is_dropped_not_reloaded() -> None:
    clock, batches = Clock(), []
    cache = AuthCache(ttl_s=5, clock=clock, spread=lambda: 0.0)
    idle, busy, lapsed = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    async def load(uid: uuid.UUID) -> AuthState | None:
        return MEMBER

    async def load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        batches.append(set(uids))
        return dict.fromkeys(uids, MEMBER)

    for user in (idle, busy, lapsed):
        await cache.get(user, many(load))
    for step in range(24):
        clock.now += 0.5
        await cache.get(busy, many(load))
        if step < 6:  # busy for the first 3 s (one refresh), then never again
            await cache.get(lapsed, many(load))
        await cache.refresh(load_many)
    assert batches[0] == {busy, lapsed}
    assert all(batch == {busy} for batch in batches[1:])
    assert set(cache._entries) == {busy}


async def test_a_full_cache_drops_the_user_refreshed_least_recently_not_the_busiest() -> None:
    clock = Clock()
    cache = AuthCache(ttl_s=5, clock=clock, spread=lambda: 0.0, max_entries=3)
    busy, quiet, other, newcomer = (uuid.uuid4() for _ in range(4))

    async def load(uid: uuid.UUID) -> AuthState | None:
        return MEMBER

    async def load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        return dict.fromkeys(uids, MEMBER)

    await cache.get(busy, many(load))  # the oldest insertion...
    clock.now += 1.0
    await cache.get(quiet, many(load))
    await cache.get(other, many(load))
    clock.now += 2.5
    await cache.get(busy, many(load))
    await cache.refresh(load_many)  # ...refreshed, so now the newest
    await cache.get(newcomer, many(load))
    assert set(cache._entries) == {busy, other, newcomer}


async def test_a_refresh_that_overlaps_an_announced_change_keeps_nothing_of_that_user() -> None:
    clock = Clock()
    cache = AuthCache(ttl_s=5, clock=clock, spread=lambda: 0.0)
    user, bystander = uuid.uuid4(), uuid.uuid4()
    rows = {user: MEMBER, bystander: MEMBER}
    reading, release = asyncio.Event(), asyncio.Event()

    async def load(uid: uuid.UUID) -> AuthState | None:
        return rows[uid]

    async def slow_load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        found = {uid: rows[uid] for uid in uids}  # read the old row...
        reading.set()
        await release.wait()
        return found

    for who in (user, bystander):
        await cache.get(who, many(load))
    clock.now += 4.5
    for who in (user, bystander):
        await cache.get(who, many(load))  # in use
    refresh = asyncio.create_task(cache.refresh(slow_load_many))
    await reading.wait()
    rows[user] = BANNED  # ...the change commits and is announced meanwhile
    cache.invalidate(user)
    release.set()
    assert await refresh == 1  # the bystander's entry was refreshed
    assert await cache.get(user, many(load)) == BANNED  # the old row was not put back
    clock.now += 4.0  # past the first load's TTL: the bystander's entry is the refreshed one
    assert await cache.get(bystander, many(load)) == MEMBER
    assert cache._entries[bystander].expires_at == pytest.approx(1004.5 + 5)


async def test_a_refresh_never_overwrites_what_a_request_loaded_during_its_read() -> None:
    clock = Clock()
    cache = AuthCache(ttl_s=5, clock=clock, spread=lambda: 0.0)
    user = uuid.uuid4()
    rows = {user: MEMBER}
    reading, release = asyncio.Event(), asyncio.Event()

    async def load(uid: uuid.UUID) -> AuthState | None:
        return rows[uid]

    async def slow_load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        found = {uid: rows[uid] for uid in uids}  # the old row...
        reading.set()
        await release.wait()
        return found

    await cache.get(user, many(load))
    clock.now += 4.5
    await cache.get(user, many(load))  # in use
    refresh = asyncio.create_task(cache.refresh(slow_load_many))
    await reading.wait()
    rows[user] = BANNED  # changed with no announcement (Redis down)...
    clock.now += 1.0  # ...and the entry expired: a request reads the new row
    assert await cache.get(user, many(load)) == BANNED
    release.set()
    assert await refresh == 0
    assert await cache.get(user, many(load)) == BANNED  # the refresh's older read was not kept


async def test_a_failed_refresh_leaves_requests_to_load_for_themselves() -> None:
    cache = AuthCache(ttl_s=0.5)
    user, loads, attempts = uuid.uuid4(), [], []

    async def load(uid: uuid.UUID) -> AuthState | None:
        loads.append(uid)
        return MEMBER

    async def broken(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        attempts.append(list(uids))
        raise OSError("the database is down")

    refresher = asyncio.create_task(cache.keep_fresh(broken))
    try:
        for _ in range(12):
            assert await cache.get(user, many(load)) == MEMBER
            await asyncio.sleep(0.1)
        assert attempts  # it tried,
        assert not refresher.done()  # logged the failure and went on
        assert len(loads) >= 2  # the entry expired and was loaded on demand
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher


async def test_misses_waiting_together_are_read_together_each_user_once() -> None:
    cache, batches = AuthCache(ttl_s=5), []
    users = [uuid.uuid4() for _ in range(300)]

    async def load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        batches.append(list(uids))
        await asyncio.sleep(0)
        return dict.fromkeys(uids, MEMBER)

    # A crowd arriving at once, each user with two requests.
    answers = await asyncio.gather(*(cache.get(user, load_many) for user in users * 2))
    assert answers == [MEMBER] * 600
    assert batches == [users]
    # Misses that come while a read is under way wait for the next one, together.
    late = [uuid.uuid4() for _ in range(3)]
    first = asyncio.create_task(cache.get(late[0], load_many))
    await asyncio.sleep(0)  # its read has started
    rest = [asyncio.create_task(cache.get(user, load_many)) for user in [*late, *late]]
    assert await asyncio.gather(first, *rest) == [MEMBER] * 7
    assert batches[1:] == [[late[0]], late[1:]]  # late[0] once: it joined the read under way
    assert await cache.get(users[0], load_many) == MEMBER  # cached: no read
    assert len(batches) == 3


async def test_a_crowd_larger_than_a_statement_is_read_a_statement_at_a_time() -> None:
    cache, sizes = AuthCache(ttl_s=5), []
    users = [uuid.uuid4() for _ in range(AUTH_STATES_MAX_USERS + 5)]

    async def load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        sizes.append(len(uids))
        return dict.fromkeys(uids, MEMBER)

    assert await asyncio.gather(*(cache.get(u, load_many) for u in users)) == [MEMBER] * len(users)
    assert sizes == [AUTH_STATES_MAX_USERS, 5]


async def test_a_failed_read_fails_its_requests_and_the_next_request_reads_again() -> None:
    cache, calls = AuthCache(ttl_s=5), []
    user, other = uuid.uuid4(), uuid.uuid4()

    async def broken(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        calls.append(list(uids))
        raise OSError("the database is down")

    results = await asyncio.gather(
        cache.get(user, broken), cache.get(other, broken), return_exceptions=True
    )
    assert [type(r) for r in results] == [OSError, OSError]
    assert calls == [[user, other]]

    async def load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        calls.append(list(uids))
        return dict.fromkeys(uids, MEMBER)

    assert await cache.get(user, load_many) == MEMBER
    assert calls[1:] == [[user]]


async def test_a_request_that_goes_away_does_not_cancel_the_read_of_the_others() -> None:
    cache = AuthCache(ttl_s=5)
    user = uuid.uuid4()
    release, reads = asyncio.Event(), []

    async def slow_load_many(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        reads.append(list(uids))
        await release.wait()
        return dict.fromkeys(uids, MEMBER)

    leaving = asyncio.create_task(cache.get(user, slow_load_many))
    staying = asyncio.create_task(cache.get(user, slow_load_many))
    await asyncio.sleep(0)
    leaving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leaving
    release.set()
    assert await staying == MEMBER
    assert reads == [[user]]
    assert await cache.get(user, slow_load_many) == MEMBER  # and it was kept
    assert reads == [[user]]


async def test_a_read_cancelled_under_way_answers_its_requests_busy() -> None:
    cache = AuthCache(ttl_s=5)
    user = uuid.uuid4()
    started = asyncio.Event()

    async def endless(uids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AuthState]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    waiting = asyncio.create_task(cache.get(user, endless))
    await started.wait()
    assert cache._reader is not None
    cache._reader.cancel()  # the process shuts down
    with pytest.raises(ServiceBusy):
        await waiting

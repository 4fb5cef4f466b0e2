"""The batch of joins decided on unlocked reads (`groupbuy.service._join_batch_unlocked`) and
written by one database call that checks them (`pool_join_batch`, PostgreSQL): it answers each
join as the locked batch does and moves exactly their money; it leaves to the locked batch what
fills the pool or needs an account opened; and when anything it was decided on changed between
the read and the write, the call writes nothing at all."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text

from app.db import create_engine, create_sessionmaker
from app.uow import UnitOfWork
from groupbuy import service
from groupbuy.batch import Fallback, OutcomeUnknown, Ticket
from groupbuy.errors import OrganizerCannotJoin
from payments import service as payments
from payments.errors import InsufficientFunds
from payments.models import AccountKind
from payments.records import TransferSpec, escrow
from payments.records import wallet as wallet_account
from tests.support.ledger import fund
from tests.support.pools import join_ledger, ledger_verifies, member, open_pool, wallet
from tests.support.trust import TrustWorld
from trust.errors import Denied

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

FUNDS = 100_000


def _ticket(
    world: TrustWorld, user: uuid.UUID, quantity: int, request: str | None = None
) -> Ticket:
    return Ticket(user_id=user, quantity=quantity, request_id=request, now=world.clock())


async def _state(world: TrustWorld, pool_id: uuid.UUID, headers: dict[str, str]) -> tuple[int, int]:
    body = (await world.client.get(f"/v1/pools/{pool_id}", headers=headers)).json()
    return body["committed_quantity"], body["participant_count"]


async def _organizer_and_pool(
    world: TrustWorld, max_quantity: int = 100
) -> tuple[uuid.UUID, dict[str, str], uuid.UUID]:
    organizer, headers = await world.user(roles=["organizer"])
    await fund(world.sessionmaker, organizer, FUNDS, "CNY", now=world.clock())
    pool = await open_pool(world, headers, max_quantity=max_quantity)
    return organizer, headers, uuid.UUID(pool["id"])


async def _join(world: TrustWorld, pool_id: uuid.UUID, headers: dict[str, str], q: int) -> str:
    answer = await world.client.post(
        f"/v1/pools/{pool_id}/joins", json={"quantity": q}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    join_id: str = answer.json()["id"]
    return join_id


async def test_an_unlocked_batch_answers_each_join_on_its_own_and_moves_exactly_their_money(
    world: TrustWorld,
) -> None:
    organizer, organizer_h, pool_id = await _organizer_and_pool(world)
    a, _ = await member(world, FUNDS)
    b, b_h = await member(world, FUNDS)
    broke, _ = await member(world, 2_500)
    banned, _ = await member(world, FUNDS)
    newcomer, _ = await member(world, FUNDS)
    await _join(world, pool_id, b_h, 2)  # opens the escrow; b's join is raised below
    _, admin_h = await world.admin()
    ban = await world.client.post(
        f"/v1/admin/users/{banned}/ban", json={"reason": "fraud"}, headers=admin_h
    )
    assert ban.status_code == 200, ban.text

    answers = await service._join_batch_unlocked(
        world.uow,
        pool_id=pool_id,
        tickets=[
            _ticket(world, a, 3, "req-a"),
            _ticket(world, b, 4),  # a raise: a second hold, of what it adds
            _ticket(world, broke, 3),  # 3,000 held from 2,500
            _ticket(world, organizer, 1),
            _ticket(world, a, 1),  # the same member twice: the second goes alone
            _ticket(world, banned, 1),
            _ticket(world, newcomer, 60),  # the gate asks a new user for a deposit
        ],
        config=world.client.app.state.trust,
    )
    assert answers is not None, "nothing changed: the batch is written as decided"
    joined_a, joined_b, poor, own, again, refused, deposit = answers
    assert isinstance(joined_a, service.Joined)
    assert isinstance(joined_b, service.Joined)
    assert (joined_a.join.quantity, joined_a.join.version) == (3, 1)
    assert (joined_b.join.quantity, joined_b.join.version) == (6, 2)
    assert joined_a.committed_quantity == joined_b.committed_quantity == 9
    assert not joined_a.filled
    assert isinstance(poor, InsufficientFunds)
    assert isinstance(own, OrganizerCannotJoin)
    assert isinstance(refused, Denied)
    assert again is Fallback.SINGLE
    assert deposit is Fallback.SINGLE

    assert await wallet(world.sessionmaker, a) == (FUNDS - 3_000, 3_000)
    assert await wallet(world.sessionmaker, b) == (FUNDS - 6_000, 6_000)
    assert await join_ledger(world.sessionmaker, str(joined_b.join.id)) == [
        ("v1", 2_000, "pending"),
        ("v2", 4_000, "pending"),
    ]
    for untouched in (broke, banned, newcomer):
        assert await wallet(world.sessionmaker, untouched) == (
            (2_500, 0) if untouched == broke else (FUNDS, 0)
        )
    assert await _state(world, pool_id, organizer_h) == (9, 2)
    mine = (await world.client.get("/v1/me/joins", headers=b_h)).json()["items"]
    assert [(j["quantity"], j["status"]) for j in mine] == [(6, "active")]

    # The retried request answers its join unchanged, and moves nothing.
    retry = await service._join_batch_unlocked(
        world.uow,
        pool_id=pool_id,
        tickets=[_ticket(world, a, 3, "req-a")],
        config=world.client.app.state.trust,
    )
    assert retry is not None
    assert isinstance(retry[0], service.Joined)
    assert retry[0].join.quantity == 3
    assert await wallet(world.sessionmaker, a) == (FUNDS - 3_000, 3_000)
    await ledger_verifies(world.sessionmaker)


async def test_what_fills_the_pool_or_needs_the_escrow_opened_is_left_to_the_locked_batch(
    world: TrustWorld,
) -> None:
    _, organizer_h, pool_id = await _organizer_and_pool(world, max_quantity=10)
    a, _ = await member(world, FUNDS)
    _b, b_h = await member(world, FUNDS)
    config = world.client.app.state.trust
    first = [_ticket(world, a, 2)]
    assert (
        await service._join_batch_unlocked(world.uow, pool_id=pool_id, tickets=first, config=config)
        is None
    ), "no join yet: the pool's escrow is not open"
    await _join(world, pool_id, b_h, 2)
    filling = [_ticket(world, a, 8)]
    assert (
        await service._join_batch_unlocked(
            world.uow, pool_id=pool_id, tickets=filling, config=config
        )
        is None
    ), "it fills the pool, which then succeeds: decided under the locks"
    assert await _state(world, pool_id, organizer_h) == (2, 1)
    assert await wallet(world.sessionmaker, a) == (FUNDS, 0)
    fits = await service._join_batch_unlocked(
        world.uow, pool_id=pool_id, tickets=[_ticket(world, a, 7)], config=config
    )
    assert fits is not None
    assert isinstance(fits[0], service.Joined)
    assert await _state(world, pool_id, organizer_h) == (9, 2)
    await ledger_verifies(world.sessionmaker)


People = dict[str, tuple[uuid.UUID, dict[str, str]]]
Change = Callable[[TrustWorld, uuid.UUID, People, datetime], Awaitable[None]]


async def _leave(world: TrustWorld, pool_id: uuid.UUID, people: People, _: datetime) -> None:
    mine = (await world.client.get("/v1/me/joins", headers=people["b"][1])).json()["items"]
    left = await world.client.delete(
        f"/v1/pools/{pool_id}/joins/{mine[0]['id']}", headers=people["b"][1]
    )
    assert left.status_code == 200, left.text


async def _raise(world: TrustWorld, pool_id: uuid.UUID, people: People, _: datetime) -> None:
    await _join(world, pool_id, people["b"][1], 1)


async def _first_join(world: TrustWorld, pool_id: uuid.UUID, people: People, _: datetime) -> None:
    await _join(world, pool_id, people["a"][1], 1)


async def _drain(world: TrustWorld, _: uuid.UUID, people: People, now: datetime) -> None:
    me = people["a"][0]
    await payments.hold(
        world.uow,
        TransferSpec(
            id=f"drain:{me}",
            debit=wallet_account(me, "CNY"),
            credit=escrow(AccountKind.POOL_ESCROW, "elsewhere", "CNY"),
            amount_minor=FUNDS - 1_000,
            kind="test",
            ref="test",
        ),
        now=now,
    )


async def _crowd(world: TrustWorld, pool_id: uuid.UUID, people: People, _: datetime) -> None:
    await _join(world, pool_id, people["c"][1], 15)  # 2 + 15 + the batch's 3 fill the pool


@pytest.mark.parametrize(
    "change",
    [_leave, _raise, _first_join, _drain, _crowd],
    ids=["join-left", "join-raised", "member-joined", "wallet-drained", "room-taken"],
)
async def test_a_batch_whose_reads_changed_before_its_write_writes_nothing(
    world: TrustWorld, change: Change
) -> None:
    _, organizer_h, pool_id = await _organizer_and_pool(world, max_quantity=20)
    a, a_h = await member(world, FUNDS)
    b, b_h = await member(world, FUNDS)
    c, c_h = await member(world, FUNDS)
    await _join(world, pool_id, b_h, 2)
    now = world.clock()
    tickets = [_ticket(world, a, 2), _ticket(world, b, 1)]  # a first join and a raise
    config = world.client.app.state.trust
    async with world.uow.autocommit() as session:
        reads = await service._read_batch(
            session, pool_id=pool_id, members=[a, b], config=config, now=now, lock=False
        )
    assert reads is not None
    pool, ids = reads.pool, reads.ids
    answers, plans = service._decide_batch(tickets, reads, config=config, now=now)
    assert len(plans) == 2
    assert answers == [Fallback.SINGLE] * 2

    await change(world, pool_id, {"a": (a, a_h), "b": (b, b_h), "c": (c, c_h)}, now)
    before = (
        await _state(world, pool_id, organizer_h),
        [await wallet(world.sessionmaker, user) for user in (a, b, c)],
        (await world.client.get("/v1/me/joins", headers=b_h)).json()["items"],
    )
    async with world.uow.autocommit() as session:
        written = await service._write_batch(session, pool=pool, plans=plans, ids=ids, now=now)
    assert written is None
    after = (
        await _state(world, pool_id, organizer_h),
        [await wallet(world.sessionmaker, user) for user in (a, b, c)],
        (await world.client.get("/v1/me/joins", headers=b_h)).json()["items"],
    )
    assert after == before
    await ledger_verifies(world.sessionmaker)

    # Decided again (the one-join path, as the queue does with a stale batch), they are made.
    again = await service._join_batch(
        world.uow, pool_id=pool_id, tickets=tickets, config=config, schedule=None
    )
    assert all(isinstance(answer, service.Joined | InsufficientFunds) for answer in again)
    await ledger_verifies(world.sessionmaker)


async def _decided(world: TrustWorld, pool_id: uuid.UUID, members: list[uuid.UUID]) -> Any:
    config = world.client.app.state.trust
    now = world.clock()
    async with world.uow.autocommit() as session:
        reads = await service._read_batch(
            session, pool_id=pool_id, members=members, config=config, now=now, lock=False
        )
    assert reads is not None
    tickets = [_ticket(world, member, 1) for member in members]
    _, plans = service._decide_batch(tickets, reads, config=config, now=now)
    assert len(plans) == len(members)
    return reads, plans, now


@pytest.mark.parametrize("side", ["server", "client"])
async def test_a_write_that_times_out_is_decided_again_or_answered_unknown(
    world: TrustWorld, side: str
) -> None:
    """The database's own timeout undoes the call (decided again under the locks); a timeout of
    the client's leaves it in doubt (its joins answered 503, never made a second time)."""
    _, organizer_h, pool_id = await _organizer_and_pool(world)
    a, _ = await member(world, FUNDS)
    _, b_h = await member(world, FUNDS)
    await _join(world, pool_id, b_h, 1)
    reads, plans, now = await _decided(world, pool_id, [a])
    url = world.uow.engine.url.render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=1, statement_timeout_s=0.3)
    try:
        impatient = UnitOfWork(create_sessionmaker(engine))
        async with world.uow as holder:  # the pool's row held by another use case meanwhile
            await service.get_pool(holder.session, pool_id, lock=True)
            async with impatient.autocommit() as session:
                if side == "client":  # the server waits on; the client gives up after 1.3 s
                    await session.execute(text("SET statement_timeout = 0"))
                    with pytest.raises(OutcomeUnknown):
                        await service._write_batch(
                            session, pool=reads.pool, plans=plans, ids=reads.ids, now=now
                        )
                else:
                    written = await service._write_batch(
                        session, pool=reads.pool, plans=plans, ids=reads.ids, now=now
                    )
                    assert written is None
    finally:
        await engine.dispose()
    assert await _state(world, pool_id, organizer_h) == (1, 1)
    assert await wallet(world.sessionmaker, a) == (FUNDS, 0)
    await ledger_verifies(world.sessionmaker)


async def test_a_known_pools_batch_reads_standings_wallets_and_joins_at_once(
    world: TrustWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, pool_id = await _organizer_and_pool(world)
    a, a_h = await member(world, FUNDS)
    b, _ = await member(world, FUNDS)
    await _join(world, pool_id, a_h, 2)  # this process now knows the pool's currency
    assert service._currencies[pool_id] == "CNY"
    config, now = world.client.app.state.trust, world.clock()
    async with world.uow.autocommit() as session:
        one_by_one = await service._read_batch(
            session, pool_id=pool_id, members=[a, b], config=config, now=now, lock=False
        )

    events: list[str] = []

    def watched(name: str, read: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(*args: Any, **kwargs: Any) -> Any:
            events.append(f"{name} sent")
            answer = await read(*args, **kwargs)
            events.append(f"{name} answered")
            return answer

        return run

    monkeypatch.setattr(
        service.trust, "standings_of", watched("standings", service.trust.standings_of)
    )
    monkeypatch.setattr(service, "_pool_and_joins", watched("pool", service._pool_and_joins))
    monkeypatch.setattr(service.ledger, "balances", watched("wallets", service.ledger.balances))
    async with world.uow.autocommit() as session:
        at_once = await service._read_batch_beside(
            world.uow, session, pool_id=pool_id, members=[a, b], config=config, now=now
        )
    assert sorted(events[:3]) == ["pool sent", "standings sent", "wallets sent"], events
    assert at_once == one_by_one
    assert at_once is not None
    assert set(at_once.joins) == {a}
    assert set(at_once.standings) == {a, b}
    assert {wallet_account(a, "CNY").key, wallet_account(b, "CNY").key} <= set(at_once.ids)


async def test_a_batch_that_knew_the_pool_wrong_reads_it_again(world: TrustWorld) -> None:
    _, _, pool_id = await _organizer_and_pool(world)
    a, a_h = await member(world, FUNDS)
    await _join(world, pool_id, a_h, 2)
    service._currencies[pool_id] = "USD"  # as if a pool of that id had been read elsewhere
    answers = await service._join_batch_unlocked(
        world.uow,
        pool_id=pool_id,
        tickets=[_ticket(world, a, 1)],
        config=world.client.app.state.trust,
    )
    assert answers is not None
    assert isinstance(answers[0], service.Joined)
    assert answers[0].join.quantity == 3
    assert service._currencies[pool_id] == "CNY"
    assert await wallet(world.sessionmaker, a) == (FUNDS - 3_000, 3_000)
    await ledger_verifies(world.sessionmaker)


async def test_batches_reading_at_once_never_wait_on_each_others_connections(
    world: TrustWorld,
) -> None:
    """A batch reading beside its connection holds one and takes two more: several at once on
    a small pool would each wait for the others' (until the pool's timeout). One at a time reads
    beside; the others read one read after another, and a pool too small reads that way too."""
    pools = []
    for _ in range(6):
        _, _, pool_id = await _organizer_and_pool(world)
        someone, headers = await member(world, FUNDS)
        await _join(world, pool_id, headers, 1)  # the process now knows each pool
        pools.append((pool_id, someone))
    url = world.uow.engine.url.render_as_string(hide_password=False)
    config, now = world.client.app.state.trust, world.clock()
    for pool_size in (3, 1):  # 6 connections; 2
        engine = create_engine(url, pool_size=pool_size, connect_timeout_s=0.5)
        uow = UnitOfWork(create_sessionmaker(engine))

        async def batch(pool_id: uuid.UUID, someone: uuid.UUID, uow: UnitOfWork = uow) -> Any:
            async with uow.autocommit() as session:
                return await service._read_batch_beside(
                    uow, session, pool_id=pool_id, members=[someone], config=config, now=now
                )

        try:
            async with asyncio.timeout(4):  # (the pool's own timeout is 5.5 s)
                reads = await asyncio.gather(*(batch(*pool) for pool in pools))
        finally:
            await engine.dispose()
        for read, (pool_id, someone) in zip(reads, pools, strict=True):
            assert read.pool.id == pool_id
            assert set(read.standings) == {someone}


async def test_a_batch_reads_one_read_after_another_while_another_reads_beside(
    world: TrustWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, pool_id = await _organizer_and_pool(world)
    a, a_h = await member(world, FUNDS)
    await _join(world, pool_id, a_h, 2)
    events: list[str] = []
    standings_of = service.trust.standings_of

    async def watched(*args: Any, **kwargs: Any) -> Any:
        events.append("standings sent")
        answer = await standings_of(*args, **kwargs)
        events.append("standings answered")
        return answer

    monkeypatch.setattr(service.trust, "standings_of", watched)
    lock = service._beside_lock(world.uow.engine)
    assert lock is not None
    async with lock, world.uow.autocommit() as session:  # another batch reads beside
        reads = await service._read_batch_beside(
            world.uow,
            session,
            pool_id=pool_id,
            members=[a],
            config=world.client.app.state.trust,
            now=world.clock(),
        )
    assert reads is not None
    assert set(reads.joins) == {a}
    assert events == ["standings sent", "standings answered"]

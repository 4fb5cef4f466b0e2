"""Use cases of groupbuy: create, join, leave, close, cancel, and settle a pool.

Every use case is one unit of work. A join consults the trust gate, reserves quantity with one
conditional UPDATE of the pool row (status open, before the deadline, never past the cap) and
holds quantity x the first tier's price from the member's wallet into the pool's escrow: all of it
or none. Settlement decides the outcome once (a conditional UPDATE of the status), then works
through the joins in bounded chunks, each its own unit of work, with ledger ids derived from the
pool and the join, so a repeated, concurrent or resumed settlement never pays twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import msgspec
from sqlalchemy import Table, Uuid, and_, bindparam, case, func, insert, select, true, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import AsyncSession, DriverQuery, on_postgres
from app.errors import body_errors
from app.text import clean_name, clean_text
from app.uow import UnitOfWork, commit_outcome_unknown, is_retryable, sqlstate, use_case
from groupbuy import pricing
from groupbuy.admission import Admission, Admit, Room
from groupbuy.batch import Fallback, JoinOutcomeUnknown, OutcomeUnknown, Ticket, queue_for
from groupbuy.errors import (
    InvalidPool,
    JoinConflict,
    JoinNotActive,
    JoinNotFound,
    MinimumNotReached,
    NotOrganizer,
    OrganizerCannotJoin,
    PoolClosed,
    PoolFull,
    PoolNotFound,
)
from groupbuy.models import Join, JoinRecord, JoinStatus, Pool, PoolStatus
from groupbuy.schemas import DESCRIPTION_MAX_CHARS, LABEL_MAX_CHARS, TITLE_MAX_CHARS
from payments import ledger
from payments.errors import InsufficientFunds, UnknownCurrency
from payments.models import AccountKind
from payments.money import is_supported_currency
from payments.records import AccountRef, TransferSpec, escrow, insurance_fund, platform_revenue
from payments.records import wallet as wallet_account
from trust import policy
from trust import service as trust
from trust.config import TrustConfig
from trust.errors import Denied
from trust.models import PartyRole, SubjectType
from trust.policy import Action, Standing, Verdict

POOLS: Table = Pool.__table__  # type: ignore[attr-defined]
JOINS: Table = Join.__table__  # type: ignore[attr-defined]
_POOL_COLUMNS = tuple(POOLS.c.keys())
_JOIN_RECORD_COLUMNS = tuple(JOINS.c.keys())

#: A pool's deadline lies between these from its creation.
MIN_DEADLINE = timedelta(minutes=5)
MAX_DEADLINE = timedelta(days=30)
#: Join holds outlive the deadline by this much, so a late settlement can still capture them.
HOLD_GRACE = timedelta(days=7)
#: Joins settled per unit of work.
SETTLE_CHUNK = 200

#: Schedules the settlement of a pool at a time (arq `_defer_until`); called after commit.
Scheduler = Callable[[UUID, datetime], Awaitable[Any]]


class PoolDraft(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    description: str
    currency: str
    tiers: list[pricing.Tier]
    min_quantity: int
    max_quantity: int
    deadline: datetime
    pickup_lat: float | None = None
    pickup_lon: float | None = None
    pickup_label: str | None = None
    protected: bool = False


def tiers_of(pool: Pool) -> list[pricing.Tier]:
    return msgspec.json.decode(pool.tiers, type=list[pricing.Tier])


def pool_escrow(pool: Pool) -> AccountRef:
    return escrow(AccountKind.POOL_ESCROW, pool.id, pool.currency)


def _pool(row: Any) -> Pool:
    return Pool(**row._mapping)


def _join(row: Any) -> JoinRecord:
    return JoinRecord(**row._mapping)


#: What the admission gate's count is started from.
_ROOM = select(POOLS.c.status, POOLS.c.deadline, POOLS.c.max_quantity, POOLS.c.committed_quantity)


async def get_pool(session: AsyncSession, pool_id: UUID, *, lock: bool = False) -> Pool:
    query = select(POOLS).where(POOLS.c.id == pool_id)
    if lock and on_postgres(session):
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    if row is None:
        raise PoolNotFound(f"no pool {pool_id}")
    return _pool(row)


async def _gate(
    session: AsyncSession,
    *,
    user_id: UUID,
    action: Action,
    amount_minor: int,
    pool: Pool,
    config: TrustConfig,
    now: datetime,
) -> int:
    """Ask the trust gate; deny raises (403), a required deposit is held in this unit of work.
    Answers the deposit it asked for (0: none)."""
    decision = trust.require_allowed(
        await trust.evaluate(
            session,
            user_id=user_id,
            action=action,
            amount_minor=amount_minor,
            currency=pool.currency,
            now=now,
            rules=config.rules,
            params=config.score,
            protected=pool.protected,
        )
    )
    if decision.verdict is Verdict.REQUIRE_DEPOSIT:
        await trust.take_deposit(
            session,
            user_id=user_id,
            subject_type=SubjectType.POOL,
            subject_id=pool.id,
            amount_minor=decision.deposit_minor,
            currency=pool.currency,
            expires_at=pool.deadline + HOLD_GRACE + config.deposit_ttl,
            now=now,
        )
        return decision.deposit_minor
    return 0


@use_case
async def create_pool(
    uow: UnitOfWork,
    *,
    organizer_id: UUID,
    draft: PoolDraft,
    platform_fee_bp: int,
    config: TrustConfig,
    schedule: Scheduler | None,
    now: datetime,
) -> Pool:
    """Open a pool; the trust gate may ask the organizer for a deposit (high-value pools)."""
    premium_bp = config.protection_premium_bp if draft.protected else 0
    errors = pricing.tier_errors(
        draft.tiers,
        min_quantity=draft.min_quantity,
        max_quantity=draft.max_quantity,
        premium_bp=premium_bp,
    )
    if not now + MIN_DEADLINE <= draft.deadline <= now + MAX_DEADLINE:
        errors.append("the deadline must be between 5 minutes and 30 days ahead")
    # Others are shown these: no control or format characters (bidi overrides, zero-width
    # spaces), and a title that shows something.
    title = clean_name(draft.title, max_chars=TITLE_MAX_CHARS)
    if not title:
        errors.append("the title must show something")
    if errors:
        raise InvalidPool("; ".join(errors), errors=body_errors(errors))
    if not is_supported_currency(draft.currency):
        raise UnknownCurrency(f"{draft.currency!r} is not an active ISO 4217 currency")
    pool = Pool(
        organizer_id=organizer_id,
        title=title,
        description=clean_text(draft.description, max_chars=DESCRIPTION_MAX_CHARS),
        currency=draft.currency,
        tiers=msgspec.json.encode(draft.tiers).decode(),
        min_quantity=draft.min_quantity,
        max_quantity=draft.max_quantity,
        deadline=draft.deadline,
        status=PoolStatus.OPEN.value,
        pickup_lat=draft.pickup_lat,
        pickup_lon=draft.pickup_lon,
        pickup_label=(
            clean_name(draft.pickup_label, max_chars=LABEL_MAX_CHARS)
            if draft.pickup_label is not None
            else None
        ),
        protected=draft.protected,
        premium_bp=premium_bp,
        platform_fee_bp=platform_fee_bp,
        created_at=now,
    )
    async with uow:
        uow.session.add(pool)
        await uow.session.flush()
        full_value = draft.max_quantity * draft.tiers[0].unit_price_minor
        await _gate(
            uow.session,
            user_id=organizer_id,
            action=Action.CREATE_POOL,
            amount_minor=full_value,
            pool=pool,
            config=config,
            now=now,
        )
        if schedule is not None:
            uow.after_commit(schedule, pool.id, pool.deadline)
        await uow.commit()
    return pool


async def _member_join(session: AsyncSession, pool_id: UUID, user_id: UUID) -> JoinRecord | None:
    query = select(JOINS).where(JOINS.c.pool_id == pool_id, JOINS.c.user_id == user_id)
    if on_postgres(session):
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return _join(row) if row else None


async def _reserve(
    session: AsyncSession, *, pool: Pool, quantity: int, new_members: int, now: datetime
) -> int:
    """Add `quantity` to the pool's committed quantity, or raise PoolFull / PoolClosed.

    One conditional UPDATE: the database refuses what would pass the cap, whoever else is
    joining at the same moment (never a read-then-write)."""
    reserved = await session.execute(
        update(POOLS)
        .where(
            POOLS.c.id == pool.id,
            POOLS.c.status == PoolStatus.OPEN.value,
            POOLS.c.deadline > now,
            POOLS.c.committed_quantity + quantity <= POOLS.c.max_quantity,
        )
        .values(
            committed_quantity=POOLS.c.committed_quantity + quantity,
            participant_count=POOLS.c.participant_count + new_members,
        )
        .returning(POOLS.c.committed_quantity)
    )
    committed = reserved.scalar()
    if committed is None:
        raise await _refusal(session, pool.id, now)
    return int(committed)


async def _refusal(session: AsyncSession, pool_id: UUID, now: datetime) -> Exception:
    """Why a reservation was refused: closed, or full (with what is left)."""
    current = await get_pool(session, pool_id)
    if current.status != PoolStatus.OPEN or current.deadline <= now:
        return PoolClosed("this pool no longer takes joins")
    left = current.max_quantity - current.committed_quantity
    return PoolFull(f"only {left} left in this pool", available_quantity=left)


def _new_join(pool: Pool, user_id: UUID, now: datetime) -> JoinRecord:
    """A member's first join, before its quantity and hold are set."""
    return JoinRecord(
        id=uuid4(),
        pool_id=pool.id,
        user_id=user_id,
        quantity=0,
        held_minor=0,
        hold_id="",
        version=0,
        first_version=0,
        status=JoinStatus.ACTIVE.value,
        last_request=None,
        charged_minor=0,
        created_at=now,
        updated_at=now,
    )


def _row(join: JoinRecord) -> dict[str, Any]:
    """The join's columns for an INSERT (the database numbers the row)."""
    values = msgspec.structs.asdict(join)
    del values["row_id"]
    return values


#: Holds of one join at most: the raise that would pass this releases them and holds the new
#: total, so that leaving or settling a join is bounded work.
MAX_JOIN_HOLDS = 50


def _hold_id(pool_id: UUID, join_id: UUID, version: int) -> str:
    return f"pool:{pool_id}:join:{join_id}:v{version}"


def hold_ids(join: JoinRecord) -> list[str]:
    """The ledger holds of an active join, oldest first: one a version since it became
    active, each of what that version added."""
    return [
        _hold_id(join.pool_id, join.id, version)
        for version in range(_first_version(join), join.version + 1)
    ]


def _first_version(join: JoinRecord) -> int:
    # (0 only on a row written by code that knew no first_version: its one hold is v1 on.)
    return max(1, join.first_version)


def _raise(
    join: JoinRecord | None, active: bool, amount: int, version: int
) -> tuple[int, list[str], int]:
    """How a join (None: a first join) comes to hold `amount` in all at `version`: what its
    new hold holds, the holds it releases, and its first_version after. A raise holds what it
    adds; a join that left holds it all again; a raise past MAX_JOIN_HOLDS releases the join's
    holds and holds it all."""
    if join is None or not active:
        return amount, [], version
    if join.version - _first_version(join) + 1 >= MAX_JOIN_HOLDS:
        return amount, hold_ids(join), version
    return amount - join.held_minor, [], join.first_version


def _hold_spec(pool: Pool, join: JoinRecord, amount_minor: int, version: int) -> TransferSpec:
    """The hold of the join's `version`: `amount_minor`, what that version adds."""
    return TransferSpec(
        id=_hold_id(pool.id, join.id, version),
        debit=wallet_account(join.user_id, pool.currency),
        credit=pool_escrow(pool),
        amount_minor=amount_minor,
        kind="pool_join",
        ref=f"pool:{pool.id}",
        expires_at=pool.deadline + HOLD_GRACE,
    )


class Joined(msgspec.Struct, frozen=True, kw_only=True):
    join: JoinRecord
    #: The pool's committed quantity and cap right after this join.
    committed_quantity: int
    max_quantity: int
    #: True when this join filled the pool (it succeeded at once).
    filled: bool


@use_case
async def _join_once(
    uow: UnitOfWork,
    *,
    pool_id: UUID,
    user_id: UUID,
    quantity: int,
    request_id: str | None,
    config: TrustConfig,
    schedule: Scheduler | None,
    now: datetime,
) -> Joined:
    async with uow:
        session = uow.session
        # The pool's row first, as every use case that touches its joins (the batch too): they
        # take their locks in one order and cannot deadlock each other.
        pool = await get_pool(session, pool_id, lock=True)
        if pool.organizer_id == user_id:
            raise OrganizerCannotJoin("organizers cannot join their own pool")
        if pool.status != PoolStatus.OPEN or pool.deadline <= now:
            raise PoolClosed("this pool no longer takes joins")
        join = await _member_join(session, pool_id, user_id)
        if join is not None and request_id is not None and join.last_request == request_id:
            return Joined(
                join=join,
                committed_quantity=pool.committed_quantity,
                max_quantity=pool.max_quantity,
                filled=False,
            )
        active = join is not None and join.status == JoinStatus.ACTIVE
        total = quantity + (join.quantity if join is not None and active else 0)
        amount = pricing.hold_minor(tiers_of(pool), total, premium_bp=pool.premium_bp)
        deposit = await _gate(
            session,
            user_id=user_id,
            action=Action.JOIN_POOL,
            amount_minor=amount,
            pool=pool,
            config=config,
            now=now,
        )
        if join is None:
            join = _new_join(pool, user_id, now)
            try:
                await session.execute(insert(JOINS).values(_row(join)))
            except IntegrityError:
                raise JoinConflict("another join of yours to this pool is in progress") from None
        version = join.version + 1
        held, released, first_version = _raise(join, active, amount, version)
        hold = _hold_spec(pool, join, held, version)
        values = {
            "quantity": total,
            "held_minor": amount,
            "hold_id": hold.id,
            "version": version,
            "first_version": first_version,
            "status": JoinStatus.ACTIVE.value,
            "last_request": request_id,
            "updated_at": now,
        }
        await session.execute(update(JOINS).where(JOINS.c.id == join.id).values(**values))
        join = msgspec.structs.replace(join, **values)
        if released:
            await ledger.void_all(session, released, now=now)
        try:
            await ledger.hold(session, hold, now=now)
        except InsufficientFunds:
            if not deposit:
                raise
            # The deposit was held first: say what the wallet was short of, both together.
            raise InsufficientFunds(
                f"this join holds {amount} and a new member's deposit of {deposit} {pool.currency}"
                f" minor units: the wallet has less than {amount + deposit} available"
            ) from None
        committed = await _reserve(
            session, pool=pool, quantity=quantity, new_members=int(not active), now=now
        )
        filled = committed >= pool.max_quantity
        if filled:
            # Full: the pool succeeds now, and its settlement runs right after the commit.
            await _decide(session, pool=pool, outcome=PoolStatus.SUCCEEDED, now=now)
            if schedule is not None:
                uow.after_commit(schedule, pool.id, now)
        await uow.commit()
    return Joined(
        join=join, committed_quantity=committed, max_quantity=pool.max_quantity, filled=filled
    )


def _pool_and_joins_query(*, lock: bool) -> DriverQuery:
    """`_pool_and_joins` on PostgreSQL: each join looked up by its whole key, (pool, member)
    pairs joined to the joins' unique index. Given `pool_id = <this pool>`, the planner took a
    hot pool for an average one and read all of its joins (by the pool and status index) for
    every batch."""
    uuids = postgresql.ARRAY(Uuid())
    pairs = func.unnest(bindparam("pools", type_=uuids), bindparam("users", type_=uuids))
    wanted = pairs.table_valued("pool_id", "user_id").render_derived()
    mine = and_(JOINS.c.pool_id == wanted.c.pool_id, JOINS.c.user_id == wanted.c.user_id)
    query = (
        select(POOLS, JOINS)
        .select_from(POOLS.outerjoin(JOINS.join(wanted, mine), true()))
        .where(POOLS.c.id == bindparam("pool_id"))
    )
    return DriverQuery(query.with_for_update(of=POOLS) if lock else query)


_POOL_AND_JOINS = {lock: _pool_and_joins_query(lock=lock) for lock in (False, True)}


async def _pool_and_joins(
    session: AsyncSession, pool_id: UUID, user_ids: list[UUID], *, lock: bool = True
) -> tuple[Pool, dict[UUID, JoinRecord]]:
    """The pool's row, locked (unless `lock` is false), and these members' joins of it, in one
    statement. The joins need no lock of their own: every use case that changes a join holds
    the pool's row first."""
    rows: Sequence[Any]
    if on_postgres(session):
        rows = await _POOL_AND_JOINS[lock].fetch(
            session, pool_id=pool_id, pools=[pool_id] * len(user_ids), users=list(user_ids)
        )
    else:
        members = and_(JOINS.c.pool_id == POOLS.c.id, JOINS.c.user_id.in_(user_ids))
        query = select(POOLS, JOINS).select_from(POOLS.outerjoin(JOINS, members))
        rows = (await session.execute(query.where(POOLS.c.id == pool_id))).all()
    if not rows:
        raise PoolNotFound(f"no pool {pool_id}")
    width = len(_POOL_COLUMNS)
    pool = Pool(**dict(zip(_POOL_COLUMNS, rows[0][:width], strict=True)))
    joins = [
        JoinRecord(**dict(zip(_JOIN_RECORD_COLUMNS, row[width:], strict=True)))
        for row in rows
        if row[width] is not None
    ]
    return pool, {join.user_id: join for join in joins}


class _Plan(msgspec.Struct, frozen=True, kw_only=True):
    """A join the batch will make: its row as it will be and the hold of what it adds."""

    index: int
    join: JoinRecord
    is_new: bool
    #: The join's status before (a new join's: None).
    was_status: str | None
    new_member: bool
    added: int
    hold: TransferSpec
    #: The join's holds this one replaces (a raise past MAX_JOIN_HOLDS), else none.
    released: list[str]


BatchAnswer = Joined | Exception | Fallback


class _Reads(msgspec.Struct, frozen=True, kw_only=True):
    """What a batch of an open pool's joins is decided on."""

    pool: Pool
    joins: dict[UUID, JoinRecord]
    standings: dict[UUID, Standing]
    #: The open accounts of the batch (the members' wallets, the escrow) by key.
    ids: dict[str, int]
    #: What each can still pay out, by id.
    available: dict[int, int]


#: Each pool's currency, as this process last read it (it never changes): a batch decided on
#: unlocked reads reads the members' wallets at the same time as the pool itself.
_currencies: dict[UUID, str] = {}
_CURRENCIES_KEPT = 10_000
#: Per engine, held by the one batch of this process that reads beside its own connection: it
#: holds one of the engine's connections and takes two more, so two such batches could each
#: wait for the other's. A batch that finds it held reads one read after another instead, and
#: so does every batch where the engine's pool has fewer connections than this.
_reading_beside: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()
_BESIDE_MIN_CONNECTIONS = 4


def _beside_lock(engine: AsyncEngine) -> asyncio.Lock | None:
    """The engine's lock for reading beside, if its pool has room for it at all."""
    size = getattr(engine.pool, "size", None)
    if not callable(size) or size() < _BESIDE_MIN_CONNECTIONS:
        return None
    lock = _reading_beside.get(engine)
    if lock is None:
        lock = _reading_beside[engine] = asyncio.Lock()
    return lock


async def _read_batch_beside(
    uow: UnitOfWork,
    session: AsyncSession,
    *,
    pool_id: UUID,
    members: list[UUID],
    config: TrustConfig,
    now: datetime,
) -> _Reads | None:
    """`_read_batch` without locks, its three reads at once: the members' standings and their
    wallets (with the escrow) each on a connection of its own (autocommit) beside `session`'s
    read of the pool and their joins. A pool this process has not read yet (its currency names
    the wallets) is read first, one read after the other, as is any batch while another one
    of this process reads beside (`_reading_beside`)."""
    currency = _currencies.get(pool_id)
    lock = _beside_lock(uow.engine)
    if currency is None or lock is None or lock.locked():
        reads = await _read_batch(
            session, pool_id=pool_id, members=members, config=config, now=now, lock=False
        )
        if reads is not None:
            if len(_currencies) >= _CURRENCIES_KEPT:
                _currencies.clear()
            _currencies[pool_id] = reads.pool.currency
        return reads
    accounts = [
        *(wallet_account(member, currency) for member in members),
        escrow(AccountKind.POOL_ESCROW, pool_id, currency),
    ]
    try:  # (a failed read cancels the others, and each ends before its connection is let go)
        async with (
            lock,  # (never waited for: it was free, and nothing was awaited since)
            uow.autocommit() as trust_session,
            uow.autocommit() as ledger_session,
            asyncio.TaskGroup() as group,
        ):
            read_standings = group.create_task(
                trust.standings_of(trust_session, user_ids=members, params=config.score, now=now)
            )
            read_pool = group.create_task(_pool_and_joins(session, pool_id, members, lock=False))
            read_balances = group.create_task(ledger.balances(ledger_session, accounts))
    except* Exception as failed:
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # (cancelled meanwhile: that comes first)
            raise asyncio.CancelledError from None
        raise failed.exceptions[0] from None
    standings, (pool, joins), (ids, available) = (
        read_standings.result(),
        read_pool.result(),
        read_balances.result(),
    )
    if pool.status != PoolStatus.OPEN or pool.deadline <= now:
        return None
    if pool.currency != currency:  # (not this pool after all: a database made anew)
        _currencies.pop(pool_id, None)
        return await _read_batch_beside(
            uow, session, pool_id=pool_id, members=members, config=config, now=now
        )
    return _Reads(pool=pool, joins=joins, standings=standings, ids=ids, available=available)


async def _read_batch(
    session: AsyncSession,
    *,
    pool_id: UUID,
    members: list[UUID],
    config: TrustConfig,
    now: datetime,
    lock: bool,
) -> _Reads | None:
    """The reads of a batch (None: the pool takes no joins). With `lock`, the pool's row and
    then the accounts (opened if need be) are locked, in that order; the standings are read
    first either way: the other processes' batches of this pool wait for that lock, so it is
    held only for what must be decided under it."""
    standings = await trust.standings_of(session, user_ids=members, params=config.score, now=now)
    pool, joins = await _pool_and_joins(session, pool_id, members, lock=lock)
    if pool.status != PoolStatus.OPEN or pool.deadline <= now:
        return None
    accounts = [*(wallet_account(member, pool.currency) for member in members), pool_escrow(pool)]
    if lock:
        ids, available = await ledger.open_and_lock(session, accounts, now)
    else:
        ids, available = await ledger.balances(session, accounts)
    return _Reads(pool=pool, joins=joins, standings=standings, ids=ids, available=available)


def _decide_batch(
    tickets: list[Ticket], reads: _Reads, *, config: TrustConfig, now: datetime
) -> tuple[list[BatchAnswer], list[_Plan]]:
    """The rules of `_join_once` for each join of a batch on what was read: each join's
    answer, and the plans of those to make (answered once made). A join is left SINGLE when
    the one-join path must take it: a deposit to take, a member's second join in the batch, or
    a user without standing (it says why)."""
    answers: list[BatchAnswer] = [Fallback.SINGLE] * len(tickets)
    pool, joins, standings, ids = reads.pool, reads.joins, reads.standings, reads.ids
    available = dict(reads.available)
    tiers = tiers_of(pool)
    committed = pool.committed_quantity
    plans: list[_Plan] = []
    seen: set[UUID] = set()
    for index, ticket in enumerate(tickets):
        member = ticket.user_id
        join = joins.get(member)
        standing = standings.get(member)
        if member in seen or standing is None:
            continue
        seen.add(member)
        if member == pool.organizer_id:
            answers[index] = OrganizerCannotJoin("organizers cannot join their own pool")
            continue
        if join is not None and ticket.request_id and join.last_request == ticket.request_id:
            answers[index] = Joined(
                join=join,
                committed_quantity=committed,
                max_quantity=pool.max_quantity,
                filled=False,
            )
            continue
        active = join is not None and join.status == JoinStatus.ACTIVE
        total = ticket.quantity + (join.quantity if join is not None and active else 0)
        amount = pricing.hold_minor(tiers, total, premium_bp=pool.premium_bp)
        decision = policy.evaluate(
            standing,
            Action.JOIN_POOL,
            amount,
            now=now,
            rules=config.rules,
            protected=pool.protected,
        )
        if decision.verdict is Verdict.DENY:
            answers[index] = Denied(
                "the trust policy refuses this action: " + ", ".join(decision.reasons),
                reasons=list(decision.reasons),
            )
            continue
        if decision.verdict is Verdict.REQUIRE_DEPOSIT:
            continue
        wallet_id = ids.get(wallet_account(member, pool.currency).key)
        need = amount - (join.held_minor if join is not None and active else 0)
        if wallet_id is None or available.get(wallet_id, 0) < need:
            answers[index] = InsufficientFunds(
                f"the wallet has less than {need} {pool.currency} minor units available"
            )
            continue
        if committed + ticket.quantity > pool.max_quantity:
            left = pool.max_quantity - committed
            answers[index] = PoolFull(f"only {left} left in this pool", available_quantity=left)
            continue
        available[wallet_id] -= need
        committed += ticket.quantity
        plans.append(_plan(index, pool, join, ticket, total, amount, active, now))
    return answers, plans


def _answer_plans(
    answers: list[BatchAnswer], plans: list[_Plan], pool: Pool, committed: int, filled: bool
) -> list[BatchAnswer]:
    for plan in plans:
        answers[plan.index] = Joined(
            join=plan.join,
            committed_quantity=committed,
            max_quantity=pool.max_quantity,
            filled=filled,
        )
    return answers


@use_case
async def _join_batch(
    uow: UnitOfWork,
    *,
    pool_id: UUID,
    tickets: list[Ticket],
    config: TrustConfig,
    schedule: Scheduler | None,
) -> list[BatchAnswer]:
    """Several admitted joins of one pool in one unit of work (the group commit), decided under
    locks taken once for all of them (the pool's row first, then the members' joins, then their
    wallets and the escrow), with one statement per step. Each join is answered on its own:
    joined, refused (its error), or SINGLE (`_decide_batch`)."""
    now = max(ticket.now for ticket in tickets)
    members = list(dict.fromkeys(ticket.user_id for ticket in tickets))
    async with uow:
        reads = await _read_batch(
            uow.session, pool_id=pool_id, members=members, config=config, now=now, lock=True
        )
        if reads is None:
            return [PoolClosed("this pool no longer takes joins") for _ in tickets]
        pool, ids = reads.pool, reads.ids
        answers, plans = _decide_batch(tickets, reads, config=config, now=now)
        if plans:
            after, filled = await _apply_plans(
                uow, pool=pool, plans=plans, locked=ids, schedule=schedule, now=now
            )
            answers = _answer_plans(answers, plans, pool, after, filled)
        await uow.commit()
    return answers


#: `pool_join_batch` (migrations 0012, 0015): the writes of a batch decided on unlocked reads,
#: checked.
_PG_JOIN_BATCH = "SELECT pool_join_batch(" + ", ".join(f"${n}" for n in range(1, 32)) + ")"
#: What it raises when anything the batch was decided on has changed: nothing was written.
_STALE = "CP412"
#: The database gave up on the call (a lock or statement timeout): nothing was written either.
_UNDONE = frozenset({"55P03", "57014"})


async def _write_batch(
    session: AsyncSession, *, pool: Pool, plans: list[_Plan], ids: dict[str, int], now: datetime
) -> int | None:
    """Write these plans with `pool_join_batch` (an autocommit session: the call commits):
    the pool's committed quantity after them, or None if what they were decided on changed
    (nothing was written). Raises OutcomeUnknown if the call was lost on its way."""
    raised = [plan.join for plan in plans if not plan.is_new]
    first = [plan.join for plan in plans if plan.is_new]
    holds = ledger.replace_holds_args(
        [hold for plan in plans for hold in plan.released],
        [plan.hold for plan in plans],
        ids=ids,
        now=now,
    )
    touched = {ids[ref.key] for plan in plans for ref in (plan.hold.debit, plan.hold.credit)}
    params = (
        pool.id,
        now,
        sum(plan.added for plan in plans),
        sum(plan.new_member for plan in plans),
        sorted(touched),
        [join.id for join in raised],
        [join.quantity for join in raised],
        [join.held_minor for join in raised],
        [join.hold_id for join in raised],
        [join.version for join in raised],
        [join.first_version for join in raised],
        [plan.was_status for plan in plans if not plan.is_new],
        [join.last_request for join in raised],
        [join.id for join in first],
        [join.user_id for join in first],
        [join.quantity for join in first],
        [join.held_minor for join in first],
        [join.hold_id for join in first],
        [join.last_request for join in first],
        *holds,
    )
    connection = await session.connection()
    try:
        committed = (await connection.exec_driver_sql(_PG_JOIN_BATCH, params)).scalar_one()
    except DBAPIError as exc:
        state = sqlstate(exc)
        if state == _STALE or state in _UNDONE or is_retryable(exc):
            return None  # nothing was written: decide again under the locks
        if state is None or exc.connection_invalidated:
            raise OutcomeUnknown from exc  # sent: it may have committed
        raise  # refused by the database: nothing was written
    except Exception as exc:  # a client-side timeout, a lost connection: it may have committed
        raise OutcomeUnknown from exc
    return int(committed)


async def _join_batch_unlocked(
    uow: UnitOfWork, *, pool_id: UUID, tickets: list[Ticket], config: TrustConfig
) -> list[BatchAnswer] | None:
    """A batch decided on reads that lock nothing, then written by one database call that locks
    the pool's row and the accounts, checks that what it was decided on still holds, and
    commits (PostgreSQL, autocommit): the pool's row is locked for that call alone, instead of
    for the round trips of `_join_batch`. None when the batch must be decided under the locks
    instead: something changed meanwhile, an account is not open yet, or the batch fills the
    pool (which decides its outcome)."""
    now = max(ticket.now for ticket in tickets)
    members = list(dict.fromkeys(ticket.user_id for ticket in tickets))
    async with uow.autocommit() as session:
        reads = await _read_batch_beside(
            uow, session, pool_id=pool_id, members=members, config=config, now=now
        )
        if reads is None:
            return [PoolClosed("this pool no longer takes joins") for _ in tickets]
        pool, ids = reads.pool, reads.ids
        answers, plans = _decide_batch(tickets, reads, config=config, now=now)
        if not plans:
            return answers
        quantity = sum(plan.added for plan in plans)
        if (
            pool_escrow(pool).key not in ids
            or pool.committed_quantity + quantity >= pool.max_quantity
        ):
            return None
        committed = await _write_batch(session, pool=pool, plans=plans, ids=ids, now=now)
        if committed is None:
            return None
    return _answer_plans(answers, plans, pool, committed, filled=False)


def _plan(
    index: int,
    pool: Pool,
    join: JoinRecord | None,
    ticket: Ticket,
    total: int,
    amount: int,
    active: bool,
    now: datetime,
) -> _Plan:
    before = join or _new_join(pool, ticket.user_id, now)
    version = before.version + 1
    held, released, first_version = _raise(join, active, amount, version)
    hold = _hold_spec(pool, before, held, version)
    after = msgspec.structs.replace(
        before,
        quantity=total,
        held_minor=amount,
        hold_id=hold.id,
        version=version,
        first_version=first_version,
        status=JoinStatus.ACTIVE.value,
        last_request=ticket.request_id,
        updated_at=now,
    )
    return _Plan(
        index=index,
        join=after,
        is_new=join is None,
        was_status=join.status if join is not None else None,
        new_member=not active,
        added=ticket.quantity,
        hold=hold,
        released=released,
    )


_CHANGED = (
    "quantity",
    "held_minor",
    "hold_id",
    "version",
    "first_version",
    "status",
    "last_request",
    "updated_at",
)
_JOIN_COLUMNS = (
    "id",
    "pool_id",
    "user_id",
    *_CHANGED[:-1],  # (updated_at last)
    "charged_minor",
    "created_at",
    "updated_at",
)
#: A batch's join rows on PostgreSQL (new members inserted, raises updated) and the pool's
#: reservation, one statement.
_PG_WRITE_AND_RESERVE = """
WITH written AS (
INSERT INTO pool_joins (id, pool_id, user_id, quantity, held_minor, hold_id, version,
                        first_version, status, last_request, charged_minor, created_at, updated_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::integer[], $5::bigint[], $6::text[],
                     $7::integer[], $8::integer[], $9::text[], $10::text[], $11::bigint[],
                     $12::timestamptz[], $13::timestamptz[])
ON CONFLICT (pool_id, user_id) DO UPDATE
   SET quantity = excluded.quantity, held_minor = excluded.held_minor,
       hold_id = excluded.hold_id, version = excluded.version,
       first_version = excluded.first_version, status = excluded.status,
       last_request = excluded.last_request, updated_at = excluded.updated_at
RETURNING 1
)
UPDATE pools
   SET committed_quantity = committed_quantity + $14, participant_count = participant_count + $15
 WHERE id = $16 AND status = 'open' AND deadline > $17
   AND committed_quantity + $14 <= max_quantity
RETURNING committed_quantity
"""


async def _pg_write_and_reserve(
    session: AsyncSession,
    *,
    pool: Pool,
    plans: list[_Plan],
    quantity: int,
    new_members: int,
    now: datetime,
) -> int:
    """The batch's join rows and the pool's reservation (the same conditional UPDATE as
    `_reserve`) as one statement; a refused reservation raises as `_reserve` does."""
    joins = [plan.join for plan in plans]
    columns = tuple([getattr(join, name) for join in joins] for name in _JOIN_COLUMNS)
    connection = await session.connection()
    reserved = await connection.exec_driver_sql(
        _PG_WRITE_AND_RESERVE, (*columns, quantity, new_members, pool.id, now)
    )
    committed = reserved.scalar()
    if committed is None:
        raise await _refusal(session, pool.id, now)
    return int(committed)


async def _write_joins(session: AsyncSession, plans: list[_Plan]) -> None:
    new_rows = [_row(plan.join) for plan in plans if plan.is_new]
    if new_rows:
        await session.execute(insert(JOINS), new_rows)
    changed = [
        {"b_id": plan.join.id, **{name: getattr(plan.join, name) for name in _CHANGED}}
        for plan in plans
        if not plan.is_new
    ]
    if changed:
        await session.execute(
            update(JOINS)
            .where(JOINS.c.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in _CHANGED}),
            changed,
        )


async def _apply_plans(
    uow: UnitOfWork,
    *,
    pool: Pool,
    plans: list[_Plan],
    locked: dict[str, int],
    schedule: Scheduler | None,
    now: datetime,
) -> tuple[int, bool]:
    """Write a batch's joins: the holds they replace released and their new holds staged (one
    ledger statement), join rows written, the pool's quantity reserved with the one conditional
    UPDATE (which still refuses to oversell: if it did refuse, everything here is rolled back
    and the joins go one by one)."""
    session = uow.session
    await ledger.replace_holds(
        session,
        [hold for plan in plans for hold in plan.released],
        [plan.hold for plan in plans],
        now=now,
        locked=locked,
    )
    quantity = sum(plan.added for plan in plans)
    new_members = sum(plan.new_member for plan in plans)
    if on_postgres(session):
        committed = await _pg_write_and_reserve(
            session, pool=pool, plans=plans, quantity=quantity, new_members=new_members, now=now
        )
    else:
        await _write_joins(session, plans)
        committed = await _reserve(
            session, pool=pool, quantity=quantity, new_members=new_members, now=now
        )
    filled = committed >= pool.max_quantity
    if filled:
        await _decide(session, pool=pool, outcome=PoolStatus.SUCCEEDED, now=now)
        if schedule is not None:
            uow.after_commit(schedule, pool.id, now)
    return committed, filled


async def _join_batched(
    uow: UnitOfWork,
    *,
    pool_id: UUID,
    ticket: Ticket,
    config: TrustConfig,
    schedule: Scheduler | None,
    admission: Admission | None,
) -> Joined:
    """On PostgreSQL the join waits for its pool's next batch (the group commit); what the batch
    leaves to a single join, and every join on SQLite (one writer: nothing to share), runs
    `_join_once`, at most `lane_width` of a pool at a time per process."""
    if uow.on_postgres:

        async def run(tickets: list[Ticket]) -> list[BatchAnswer]:
            answers = await _join_batch_unlocked(
                uow, pool_id=pool_id, tickets=tickets, config=config
            )
            if answers is not None:
                return answers
            batch_uow = uow.fresh()
            try:
                return await _join_batch(
                    batch_uow, pool_id=pool_id, tickets=tickets, config=config, schedule=schedule
                )
            except Exception as exc:
                if commit_outcome_unknown(batch_uow, exc):
                    raise OutcomeUnknown from exc
                raise

        answer = await queue_for(uow.engine, pool_id).submit(ticket, run)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, Joined):
            return answer
    lane = admission.lane(pool_id) if admission is not None else contextlib.nullcontext()
    async with lane:
        return await _join_once(
            uow,
            pool_id=pool_id,
            user_id=ticket.user_id,
            quantity=ticket.quantity,
            request_id=ticket.request_id,
            config=config,
            schedule=schedule,
            now=ticket.now,
        )


async def join_pool(
    uow: UnitOfWork,
    *,
    pool_id: UUID,
    user_id: UUID,
    quantity: int,
    request_id: str | None,
    config: TrustConfig,
    schedule: Scheduler | None,
    admission: Admission | None,
    now: datetime,
) -> JoinRecord:
    """Reserve quantity in an open pool and hold its price: all of it or nothing, never past
    the cap. Joining again raises the member's quantity (one join per member per pool).

    The admission gate refuses what cannot fit before the database is asked; the database's
    conditional UPDATE decides the rest. `request_id` names the request (derived from its
    Idempotency-Key): a request that already changed this join (a retry after a crash) answers
    the join instead of adding again, also once the pool is full or closed (it may be the join
    that filled it)."""
    ticket = Ticket(user_id=user_id, quantity=quantity, request_id=request_id, now=now)
    try:
        return await _admit_and_join(
            uow,
            pool_id=pool_id,
            ticket=ticket,
            config=config,
            schedule=schedule,
            admission=admission,
        )
    except (PoolClosed, PoolFull):
        if request_id is not None:
            mine = and_(JOINS.c.pool_id == pool_id, JOINS.c.user_id == user_id)
            async with uow:
                row = (await uow.session.execute(select(JOINS).where(mine))).first()
            made = _join(row) if row is not None else None
            if made and made.last_request == request_id and made.status != JoinStatus.LEFT:
                return made
        raise


async def _admit_and_join(
    uow: UnitOfWork,
    *,
    pool_id: UUID,
    ticket: Ticket,
    config: TrustConfig,
    schedule: Scheduler | None,
    admission: Admission | None,
) -> JoinRecord:
    """The admission gate, then the batch (or the single join); what the gate admitted is
    given back if the join fails."""
    quantity, now = ticket.quantity, ticket.now
    verdict, left = await admission.admit(pool_id, quantity) if admission else (Admit.UNKNOWN, 0)
    if admission is not None and verdict is Admit.UNKNOWN:
        # No count (new, expired, flushed): start one from the database's row, then ask again,
        # so a crowd arriving meanwhile does not all queue for the pool's row.
        async def room() -> Room | None:
            reader = uow.fresh()  # the read is shared: not tied to this request's session
            async with reader:
                row = (await reader.session.execute(_ROOM.where(POOLS.c.id == pool_id))).first()
            if row is None:
                return None
            open_ = row.status == PoolStatus.OPEN
            return Room(row.max_quantity - row.committed_quantity if open_ else None, row.deadline)

        found = await admission.refill(pool_id, room)
        if found is None:
            raise PoolNotFound(f"no pool {pool_id}")
        if found.left is None or found.deadline <= now:
            if found.left is not None:  # past its deadline, not yet settled
                await admission.close(pool_id)
            raise PoolClosed("this pool no longer takes joins")
        verdict, left = await admission.admit(pool_id, quantity)
    if verdict is Admit.FULL:
        raise PoolFull(f"only {left} left in this pool", available_quantity=left)
    if verdict is Admit.CLOSED:
        raise PoolClosed("this pool no longer takes joins")
    try:
        joined = await _join_batched(
            uow,
            pool_id=pool_id,
            ticket=ticket,
            config=config,
            schedule=schedule,
            admission=admission,
        )
    except JoinOutcomeUnknown:
        raise  # (it may stand: the admitted quantity is not given back)
    except Exception:
        if admission is not None and verdict is Admit.ADMITTED:
            await admission.give_back(pool_id, quantity)
        raise
    if admission is not None:
        if joined.filled:
            await admission.close(pool_id)
        elif verdict is Admit.UNKNOWN:
            await admission.seed(pool_id, joined.max_quantity - joined.committed_quantity)
    return joined.join


@use_case
async def leave_pool(
    uow: UnitOfWork,
    *,
    pool_id: UUID,
    join_id: UUID,
    user_id: UUID,
    admission: Admission | None,
    now: datetime,
) -> JoinRecord:
    """Give the quantity back and release the hold, while the pool is open."""
    async with uow:
        session = uow.session
        # The pool's row first, as every join use case: the join read next cannot change.
        await get_pool(session, pool_id, lock=True)
        row = (
            await session.execute(
                select(JOINS).where(
                    JOINS.c.id == join_id, JOINS.c.pool_id == pool_id, JOINS.c.user_id == user_id
                )
            )
        ).first()
        if row is None:
            raise JoinNotFound(f"no join {join_id} of yours in pool {pool_id}")
        join = _join(row)
        if join.status != JoinStatus.ACTIVE:
            raise JoinNotActive(f"this join is already {join.status}")
        returned = await session.execute(
            update(POOLS)
            .where(
                POOLS.c.id == pool_id,
                POOLS.c.status == PoolStatus.OPEN.value,
                POOLS.c.deadline > now,
            )
            .values(
                committed_quantity=POOLS.c.committed_quantity - join.quantity,
                participant_count=POOLS.c.participant_count - 1,
            )
            .returning(POOLS.c.id)
        )
        if returned.first() is None:
            raise PoolClosed("this pool is no longer open: joins cannot leave it")
        left = await session.execute(
            update(JOINS)
            .where(JOINS.c.id == join_id, JOINS.c.status == JoinStatus.ACTIVE.value)
            .values(status=JoinStatus.LEFT.value, updated_at=now)
            .returning(JOINS.c.id)
        )
        if left.first() is None:
            raise PoolClosed("this join changed meanwhile; try again")
        await ledger.void_all(session, hold_ids(join), now=now)
        await trust.release_deposits(
            session, subject_type=SubjectType.POOL, subject_id=pool_id, user_ids=[user_id], now=now
        )
        join = msgspec.structs.replace(join, status=JoinStatus.LEFT.value, updated_at=now)
        await uow.commit()
    if admission is not None:
        await admission.give_back(pool_id, join.quantity)
    return join


async def _decide(
    session: AsyncSession, *, pool: Pool, outcome: PoolStatus, now: datetime
) -> Pool | None:
    """Move an open pool to its outcome exactly once; None if it was not open any more."""
    final_price = _final_price_sql(pool) if outcome is PoolStatus.SUCCEEDED else None
    decided = await session.execute(
        update(POOLS)
        .where(POOLS.c.id == pool.id, POOLS.c.status == PoolStatus.OPEN.value)
        .values(status=outcome.value, decided_at=now, final_unit_price_minor=final_price)
        .returning(*POOLS.c)
    )
    row = decided.first()
    return _pool(row) if row else None


def _final_price_sql(pool: Pool) -> Any:
    """The final unit price from the committed quantity as the database has it at the UPDATE
    (a CASE over the tiers), so a join committed just before is priced in."""
    tiers = tiers_of(pool)
    whens = [
        (POOLS.c.committed_quantity >= tier.min_quantity, tier.unit_price_minor)
        for tier in reversed(tiers)
    ]
    return case(*whens, else_=tiers[0].unit_price_minor)


async def _organizer_action(uow: UnitOfWork, *, pool_id: UUID, user_id: UUID) -> Pool:
    pool = await get_pool(uow.session, pool_id, lock=True)
    if pool.organizer_id != user_id:
        raise NotOrganizer("only the pool's organizer may do this")
    if pool.status != PoolStatus.OPEN:
        raise PoolClosed(f"this pool is already {pool.status}")
    return pool


@use_case
async def _end_early(
    uow: UnitOfWork,
    *,
    pool_id: UUID,
    user_id: UUID,
    outcome: PoolStatus,
    schedule: Scheduler | None,
    admission: Admission | None,
    now: datetime,
) -> Pool:
    """The organizer decides an open pool now; its settlement runs once this commits."""
    async with uow:
        pool = await _organizer_action(uow, pool_id=pool_id, user_id=user_id)
        if outcome is PoolStatus.SUCCEEDED and pool.committed_quantity < pool.min_quantity:
            raise MinimumNotReached(
                f"{pool.min_quantity - pool.committed_quantity} more needed before closing"
            )
        decided = await _decide(uow.session, pool=pool, outcome=outcome, now=now)
        if decided is None:
            raise PoolClosed("this pool was decided meanwhile")
        if schedule is not None:
            uow.after_commit(schedule, pool.id, now)
        await uow.commit()
    if admission is not None:
        await admission.close(pool_id)
    return decided


async def close_pool(
    uow: UnitOfWork,
    *,
    pool_id: UUID,
    user_id: UUID,
    schedule: Scheduler | None,
    admission: Admission | None,
    now: datetime,
) -> Pool:
    """The organizer ends the pool early once it reached its minimum: it succeeds now."""
    return await _end_early(
        uow,
        pool_id=pool_id,
        user_id=user_id,
        outcome=PoolStatus.SUCCEEDED,
        schedule=schedule,
        admission=admission,
        now=now,
    )


async def cancel_pool(
    uow: UnitOfWork,
    *,
    pool_id: UUID,
    user_id: UUID,
    schedule: Scheduler | None,
    admission: Admission | None,
    now: datetime,
) -> Pool:
    """The organizer calls the pool off: every hold is released by its settlement."""
    return await _end_early(
        uow,
        pool_id=pool_id,
        user_id=user_id,
        outcome=PoolStatus.CANCELLED,
        schedule=schedule,
        admission=admission,
        now=now,
    )


# -- settlement -----------------------------------------------------------------------------------


async def _end_deposits(
    session: AsyncSession,
    *,
    pool: Pool,
    user_ids: list[UUID],
    complaint_window: timedelta,
    now: datetime,
) -> None:
    """A settled pool's deposits stay held through the complaint window (so a complaint can
    forfeit them); a failed or cancelled pool's are released at once."""
    if pool.status == PoolStatus.SUCCEEDED:
        await trust.release_after(
            session,
            subject_type=SubjectType.POOL,
            subject_id=pool.id,
            user_ids=user_ids,
            when=(pool.decided_at or now) + complaint_window,
        )
    else:
        await trust.release_deposits(
            session, subject_type=SubjectType.POOL, subject_id=pool.id, user_ids=user_ids, now=now
        )


@use_case
async def _settle_chunk(
    uow: UnitOfWork, *, pool: Pool, limit: int, complaint_window: timedelta, now: datetime
) -> int:
    """Charge (success) or release (failure, cancel) up to `limit` active joins; answers how
    many. Each join's ledger ids derive from the pool and the join: a repeat changes nothing."""
    async with uow:
        session = uow.session
        query = (
            select(JOINS)
            .where(JOINS.c.pool_id == pool.id, JOINS.c.status == JoinStatus.ACTIVE.value)
            .order_by(JOINS.c.row_id)
            .limit(limit)
        )
        if on_postgres(session):
            query = query.with_for_update(skip_locked=True)
        joins = [_join(row) for row in (await session.execute(query)).all()]
        if not joins:
            return 0
        succeeded = pool.status == PoolStatus.SUCCEEDED
        price = pool.final_unit_price_minor or 0
        holds = {join.id: hold_ids(join) for join in joins}
        held = (
            await ledger.hold_amounts(session, [h for ids in holds.values() for h in ids])
            if succeeded
            else {}
        )
        for join in joins:
            if succeeded:
                charge = pricing.charge_minor(price, join.quantity, premium_bp=pool.premium_bp)
                # The join's holds oldest first, captured up to the charge; the rest released.
                taken = pricing.captures([held[h] for h in holds[join.id]], charge)
                for hold_id, part in zip(holds[join.id], taken, strict=True):
                    if part:
                        await ledger.capture(session, hold_id=hold_id, amount_minor=part, now=now)
                    else:
                        await ledger.void(session, hold_id=hold_id, now=now)
                premium = pricing.premium_minor(price, join.quantity, pool.premium_bp)
                if premium:
                    await ledger.transfer(
                        session,
                        TransferSpec(
                            id=f"settle:pool:{pool.id}:join:{join.id}:premium",
                            debit=pool_escrow(pool),
                            credit=insurance_fund(pool.currency),
                            amount_minor=premium,
                            kind="protection_premium",
                            ref=f"pool:{pool.id}",
                        ),
                        now=now,
                    )
                status, charged = JoinStatus.CHARGED, charge
            else:
                await ledger.void_all(session, holds[join.id], now=now)
                status, charged = JoinStatus.RELEASED, 0
            await session.execute(
                update(JOINS)
                .where(JOINS.c.id == join.id, JOINS.c.status == JoinStatus.ACTIVE.value)
                .values(status=status.value, charged_minor=charged, updated_at=now)
            )
        members = [join.user_id for join in joins]
        if succeeded:
            await trust.register_transaction(
                session,
                subject_type=SubjectType.POOL,
                subject_id=pool.id,
                parties=[
                    trust.Party(pool.organizer_id, PartyRole.ORGANIZER),
                    *(trust.Party(member, PartyRole.MEMBER) for member in members),
                ],
                completed_at=pool.decided_at or now,
                currency=pool.currency,
                protected=pool.protected,
            )
        await _end_deposits(
            session, pool=pool, user_ids=members, complaint_window=complaint_window, now=now
        )
        await uow.commit()
    return len(joins)


@use_case
async def _finish(uow: UnitOfWork, *, pool: Pool, config: TrustConfig, now: datetime) -> bool:
    """Pay the organizer and the platform out of the escrow (success) and mark the pool settled;
    False if the trust gate holds the payout back (the sweep tries again later)."""
    async with uow:
        session = uow.session
        if pool.status == PoolStatus.SUCCEEDED:
            totals = pricing.settlement(
                tiers_of(pool), pool.committed_quantity, platform_fee_bp=pool.platform_fee_bp
            )
            decision = await trust.evaluate(
                session,
                user_id=pool.organizer_id,
                action=Action.PAYOUT,
                amount_minor=totals.payout_minor,
                currency=pool.currency,
                now=now,
                rules=config.rules,
                params=config.score,
            )
            if decision.verdict is Verdict.DENY:
                await _note_attempt(session, pool.id, now)
                await uow.commit()
                return False
            payouts = [
                ("payout", wallet_account(pool.organizer_id, pool.currency), totals.payout_minor),
                ("fee", platform_revenue(pool.currency), totals.fee_minor),
            ]
            await ledger.post_linked(
                session,
                [
                    TransferSpec(
                        id=f"settle:pool:{pool.id}:{name}",
                        debit=pool_escrow(pool),
                        credit=account,
                        amount_minor=amount,
                        kind=f"pool_{name}",
                        ref=f"pool:{pool.id}",
                    )
                    for name, account, amount in payouts
                    if amount > 0
                ],
                now=now,
            )
        await _end_deposits(
            session,
            pool=pool,
            user_ids=[pool.organizer_id],
            complaint_window=config.rating_window,
            now=now,
        )
        await session.execute(
            update(POOLS)
            .where(POOLS.c.id == pool.id, POOLS.c.settled_at.is_(None))
            .values(settled_at=now)
        )
        await uow.commit()
    return True


async def settle_pool(
    uow: UnitOfWork,
    *,
    pool_id: UUID,
    config: TrustConfig,
    now: datetime,
    chunk: int = SETTLE_CHUNK,
) -> Pool:
    """Settle a pool whose outcome is due or decided: idempotent, safe to run twice or at once.

    An open pool past its deadline is decided first (succeeded if it reached its minimum, else
    failed); an open pool before its deadline is left alone."""
    async with uow:
        # Locked: a join or leave that holds the row commits first and is counted.
        pool = await get_pool(uow.session, pool_id, lock=True)
        if pool.status == PoolStatus.OPEN and pool.deadline <= now:
            reached = pool.committed_quantity >= pool.min_quantity
            outcome = PoolStatus.SUCCEEDED if reached else PoolStatus.FAILED
            await _decide(uow.session, pool=pool, outcome=outcome, now=now)
            await uow.commit()
    async with uow:
        pool = await get_pool(uow.session, pool_id)
    if pool.status == PoolStatus.OPEN or pool.settled_at is not None:
        return pool
    window = config.rating_window
    while await _settle_chunk(uow, pool=pool, limit=chunk, complaint_window=window, now=now):
        pass
    async with uow:
        remaining = (
            await uow.session.execute(
                select(JOINS.c.id)
                .where(JOINS.c.pool_id == pool.id, JOINS.c.status == JoinStatus.ACTIVE.value)
                .limit(1)
            )
        ).first()
    if remaining is None:  # a concurrent settler may still hold some joins: it finishes then
        await _finish(uow, pool=pool, config=config, now=now)
    async with uow:
        return await get_pool(uow.session, pool_id)


async def _note_attempt(session: AsyncSession, pool_id: UUID, now: datetime) -> None:
    await session.execute(
        update(POOLS).where(POOLS.c.id == pool_id).values(settle_attempted_at=now)
    )


@use_case
async def note_settle_attempt(uow: UnitOfWork, *, pool_id: UUID, now: datetime) -> None:
    """Record that a settlement stopped short (it failed): the sweep tries the others first."""
    async with uow:
        await _note_attempt(uow.session, pool_id, now)
        await uow.commit()


def due_pools_query(*, now: datetime, limit: int) -> Any:
    """Pools whose settlement is owed: open past their deadline, or decided but not settled;
    those never tried first (by deadline), then those whose last try is oldest."""
    return (
        select(POOLS.c.id)
        .where(
            POOLS.c.settled_at.is_(None),  # ix_pools_unsettled: never the settled history
            (POOLS.c.status != PoolStatus.OPEN.value) | (POOLS.c.deadline <= now),
        )
        .order_by(
            POOLS.c.settle_attempted_at.is_not(None), POOLS.c.settle_attempted_at, POOLS.c.deadline
        )
        .limit(limit)
    )


async def due_pools(session: AsyncSession, *, now: datetime, limit: int) -> list[UUID]:
    """The ids of `due_pools_query`."""
    return list((await session.execute(due_pools_query(now=now, limit=limit))).scalars())


# -- reads ----------------------------------------------------------------------------------------


async def list_pools(
    session: AsyncSession,
    *,
    status: PoolStatus | None,
    box: tuple[float, float, float, float] | None,
    limit: int,
    before: int | None,
) -> list[Pool]:
    """Pools newest first; `box` (south, west, north, east) keeps those whose pickup lies in it
    (an index range on the pickup's latitude, then longitude)."""
    query = select(POOLS).order_by(POOLS.c.row_id.desc()).limit(limit)
    if status is not None:
        query = query.where(POOLS.c.status == status.value)
    if box is not None:
        south, west, north, east = box
        query = query.where(POOLS.c.pickup_lat.between(south, north))
        if west <= east:
            query = query.where(POOLS.c.pickup_lon.between(west, east))
        else:  # the box crosses the antimeridian
            query = query.where((POOLS.c.pickup_lon >= west) | (POOLS.c.pickup_lon <= east))
    if before is not None:
        query = query.where(POOLS.c.row_id < before)
    return [_pool(row) for row in (await session.execute(query)).all()]


class JoinView(msgspec.Struct, frozen=True, kw_only=True):
    join: JoinRecord
    pool: Pool


async def my_joins(
    session: AsyncSession,
    *,
    user_id: UUID,
    status: JoinStatus | None,
    limit: int,
    before: int | None,
) -> list[JoinView]:
    query = (
        select(JOINS, POOLS)
        .join(POOLS, POOLS.c.id == JOINS.c.pool_id)
        .where(JOINS.c.user_id == user_id)
        .order_by(JOINS.c.row_id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(JOINS.c.status == status.value)
    if before is not None:
        query = query.where(JOINS.c.row_id < before)
    rows = (await session.execute(query)).all()
    join_columns = len(JOINS.c)
    return [
        JoinView(
            join=JoinRecord(**dict(zip(JOINS.c.keys(), row[:join_columns], strict=True))),
            pool=Pool(**dict(zip(POOLS.c.keys(), row[join_columns:], strict=True))),
        )
        for row in rows
    ]

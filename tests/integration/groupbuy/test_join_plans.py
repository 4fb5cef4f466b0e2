"""A batch of joins reads only its own rows, however many joins its pool has and however many
holds are pending, also while the tables are too young for the planner to have statistics (a
flash crowd fills them faster than autovacuum analyzes them). Checked on the plans PostgreSQL
ran (auto_explain, every nested statement of `pool_join_batch` too): before migration 0016 a
batch read every join of its pool and every pending hold of the database."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from app.db import create_sessionmaker
from app.uow import UnitOfWork
from groupbuy import service
from groupbuy.batch import Ticket
from tests.support.ledger import fund
from tests.support.plans import explaining_engine, rows_read
from tests.support.pools import member, open_pool
from tests.support.trust import TrustWorld

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

CROWD = 4_000
#: What a batch of two joins may read of a table in one plan node: its own rows and a few more.
OWN_ROWS = 10
BATCHES = 8
_TABLES = ("pool_joins", "ledger_transfers")


async def _crowd(world: TrustWorld, pool_id: uuid.UUID, someone: uuid.UUID) -> None:
    """CROWD more members of the pool, each with a join and a pending hold (rows as the
    planner sees them: their money is not what this test reads, and `_disperse` deletes them
    before the database's ledger is verified by another test)."""
    async with world.sessionmaker() as session:
        await session.execute(
            text(
                "INSERT INTO users (id, email, password_hash, display_name, roles, created_at,"
                " auth_version) SELECT gen_random_uuid(), 'plan-crowd-' || i || '@example.com',"
                " 'x', 'Crowd', 'member', now(), 0 FROM generate_series(1, :n) i"
            ),
            {"n": CROWD},
        )
        await session.execute(
            text(
                "INSERT INTO pool_joins (id, pool_id, user_id, quantity, held_minor, hold_id,"
                " version, first_version, status, last_request, charged_minor, created_at,"
                " updated_at) SELECT gen_random_uuid(), :pool, id, 1, 1000, 'plan-crowd:' || id,"
                " 1, 1, 'active', NULL, 0, now(), now() FROM users"
                " WHERE email LIKE 'plan-crowd-%'"
            ),
            {"pool": pool_id},
        )
        await session.execute(
            text(
                "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id,"
                " amount_minor, currency, kind, ref, status, is_hold, expires_at,"
                " refunded_minor, created_at)"
                " SELECT 'plan-crowd:' || j.user_id, w.id, e.id, 1000, 'CNY', 'pool_hold', 'crowd',"
                " 'pending', true, now() + interval '1 day', 0, now()"
                " FROM pool_joins j, ledger_accounts w, ledger_accounts e"
                " WHERE j.hold_id LIKE 'plan-crowd:%' AND w.key = :wallet AND e.key = :escrow"
            ),
            {"wallet": f"wallet:{someone}:CNY", "escrow": f"pool_escrow:{pool_id}:CNY"},
        )
        await session.commit()


async def _disperse(world: TrustWorld) -> None:
    async with world.sessionmaker() as session:
        await session.execute(text("DELETE FROM ledger_transfers WHERE id LIKE 'plan-crowd:%'"))
        await session.execute(text("DELETE FROM pool_joins WHERE hold_id LIKE 'plan-crowd:%'"))
        await session.execute(text("DELETE FROM users WHERE email LIKE 'plan-crowd-%'"))
        await session.commit()


async def test_a_batch_reads_its_members_joins_and_holds_not_its_pools(world: TrustWorld) -> None:
    organizer, organizer_h = await world.user(roles=["organizer"])
    await fund(world.sessionmaker, organizer, 10_000_000, "CNY", now=world.clock())
    pool_id = uuid.UUID((await open_pool(world, organizer_h, max_quantity=5_000))["id"])
    newcomer, _ = await member(world, 100_000)
    raiser, raiser_h = await member(world, 100_000)
    first = await world.client.post(
        f"/v1/pools/{pool_id}/joins", json={"quantity": 1}, headers=raiser_h
    )
    assert first.status_code == 201, first.text
    await _crowd(world, pool_id, raiser)
    try:
        read = await _batches_read(world, pool_id, newcomer, raiser)
    finally:
        await _disperse(world)
    tables = {table for table, _ in read}
    assert tables == {"pool_joins", "ledger_transfers"}, "the batch's own statements were seen"
    assert max(rows for _, rows in read) <= OWN_ROWS, sorted(read, key=lambda r: -r[1])[:5]


async def _batches_read(
    world: TrustWorld, pool_id: uuid.UUID, newcomer: uuid.UUID, raiser: uuid.UUID
) -> list[tuple[str, float]]:
    """BATCHES batches of a new join and a raise, on a connection that explains every plan:
    (table, rows read) of each plan node that read the joins or the transfers."""
    url = world.uow.engine.url.render_as_string(hide_password=False)
    async with explaining_engine(url) as (engine, plans):
        uow = UnitOfWork(create_sessionmaker(engine))
        # More batches than PostgreSQL plans for their parameters (5) before it may settle on a
        # generic plan, which is where a misjudged hot pool stays.
        for _ in range(BATCHES):
            answers = await service._join_batch_unlocked(
                uow,
                pool_id=pool_id,
                tickets=[
                    Ticket(user_id=newcomer, quantity=1, request_id=None, now=world.clock()),
                    Ticket(user_id=raiser, quantity=2, request_id=None, now=world.clock()),
                ],
                config=world.client.app.state.trust,
            )
            assert answers is not None, "the batch was written as decided"
            assert all(isinstance(answer, service.Joined) for answer in answers), answers
            # The same batch decided under the locks (what a batch that fills its pool, or
            # finds something changed, takes).
            answers = await service._join_batch(
                uow,
                pool_id=pool_id,
                tickets=[Ticket(user_id=raiser, quantity=1, request_id=None, now=world.clock())],
                config=world.client.app.state.trust,
                schedule=None,
            )
            assert all(isinstance(answer, service.Joined) for answer in answers), answers
    return [found for plan in plans for found in rows_read(plan, _TABLES)]

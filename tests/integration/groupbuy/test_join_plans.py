"""A batch of joins reads only its own rows, however many joins its pool has and however many
holds are pending, also while the tables are too young for the planner to have statistics (a
flash crowd fills them faster than autovacuum analyzes them). Checked on the plans PostgreSQL
ran (auto_explain, every nested statement of `pool_join_batch` too): before migration 0016 a
batch read every join of its pool and every pending hold of the database."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import event, text

from app.db import create_engine, create_sessionmaker
from app.uow import UnitOfWork
from groupbuy import service
from groupbuy.batch import Ticket
from tests.support.ledger import fund
from tests.support.pools import member, open_pool
from tests.support.trust import TrustWorld

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

CROWD = 4_000
#: What a batch of two joins may read of a table in one plan node: its own rows and a few more.
OWN_ROWS = 10
BATCHES = 8

_EXPLAIN_EVERYTHING = (
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.sample_rate = 1",
    "SET auto_explain.log_analyze = on",
    "SET auto_explain.log_timing = off",
    "SET auto_explain.log_nested_statements = on",
    "SET auto_explain.log_format = 'json'",
    "SET client_min_messages = 'log'",
)


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


def _rows_read(node: dict[str, Any]) -> list[tuple[str, float]]:
    """(table, rows the node read from it) for a plan node and those below it."""
    found = []
    if node.get("Relation Name") in ("pool_joins", "ledger_transfers"):
        kept = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
        kept += node.get("Rows Removed by Index Recheck", 0)
        found.append((node["Relation Name"], kept * node.get("Actual Loops", 1)))
    for child in node.get("Plans", []):
        found += _rows_read(child)
    return found


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
    plans: list[dict[str, Any]] = []

    def explain_everything(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        for statement in _EXPLAIN_EVERYTHING:
            cursor.execute(statement)
        cursor.close()
        dbapi_connection.commit()  # (the settings would go with the transaction they began)

        def keep(_: Any, message: Any) -> None:
            _, _, plan = message.message.partition("plan:")
            if plan.strip():
                plans.append(json.loads(plan)["Plan"])

        dbapi_connection.driver_connection.add_log_listener(keep)

    url = world.uow.engine.url.render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=1)
    event.listen(engine.sync_engine, "connect", explain_everything)
    uow = UnitOfWork(create_sessionmaker(engine))
    try:
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
    finally:
        await engine.dispose()

    return [found for plan in plans for found in _rows_read(plan)]

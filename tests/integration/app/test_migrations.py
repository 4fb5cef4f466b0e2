"""Migrations build the schema from an empty database, on both backends, and agree with the
models (nothing left for autogenerate to do)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from app.db import create_engine
from app.migrate import current_revision, upgrade
from tests.support.services import on_a_new_postgres_database, sqlite_url


def _head() -> str:
    from alembic.script import ScriptDirectory

    from app.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _differences(connection: Connection) -> list[Any]:
    """What autogenerate would still change: the models and the migrations must agree."""
    import app.models  # noqa: F401  (registers every table)

    context = MigrationContext.configure(connection, opts={"compare_type": False})
    return [
        diff
        for diff in compare_metadata(context, SQLModel.metadata)
        if not (isinstance(diff, tuple) and diff[0] == "remove_table")  # alembic's own table
    ]


async def _upgrade_and_inspect(url: str) -> tuple[str | None, set[str]]:
    engine = create_engine(url, pool_size=1)
    try:
        await upgrade(engine)
        await upgrade(engine)  # a second run is a no-op
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert await conn.run_sync(_differences) == []
        return await current_revision(engine), tables
    finally:
        await engine.dispose()


async def test_migrations_run_up_from_empty_sqlite(tmp_path: object) -> None:
    revision, tables = await _upgrade_and_inspect(sqlite_url(str(tmp_path)))
    assert revision == _head()
    assert "users" in tables


async def test_migrations_run_up_from_empty_postgres() -> None:
    revision, tables = await on_a_new_postgres_database(_upgrade_and_inspect)
    assert revision == _head()
    assert "users" in tables


async def _users_and_pool(
    conn: Any, *, users: list[Any], pool: Any, currency: str, status: str, now: Any
) -> None:
    """Rows as a migration test writes them below the head: these users (the first the
    organizer) and a pool of theirs."""
    from sqlalchemy import insert

    from app.accounts.models import User
    from groupbuy.models import Pool

    for user in users:
        await conn.execute(insert(User.__table__).values(  # type: ignore[attr-defined]
            id=user, email=f"{user}@example.com", password_hash="x", display_name="U",
            roles="member,organizer", created_at=now, auth_version=0,
        ))  # fmt: skip
    await conn.execute(insert(Pool.__table__).values(  # type: ignore[attr-defined]
        id=pool, organizer_id=users[0], title="Rice", description="", currency=currency,
        tiers="[]", min_quantity=1, max_quantity=10, deadline=now, status=status,
        platform_fee_bp=0, created_at=now,
    ))  # fmt: skip


async def _transactions_before_and_after_0014(url: str) -> dict[str, str | None]:
    """Migrate to 0013, register a pool's and an unknown match's transactions as then, then
    migrate on: each transaction's currency as 0014 leaves it."""
    import uuid
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from trust.models import TrustTransaction

    transactions = TrustTransaction.__table__  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    organizer, pool, ghost = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    engine = create_engine(url, pool_size=1)
    try:
        await upgrade(engine, "0013")
        async with engine.begin() as conn:
            await _users_and_pool(
                conn, users=[organizer], pool=pool, currency="JPY", status="succeeded", now=now
            )
            for subject_type, subject_id in (("pool", pool), ("match", ghost)):
                await conn.execute(insert(transactions).values(
                    subject_type=subject_type, subject_id=subject_id, completed_at=now,
                    protected=True,
                ))  # fmt: skip
        await upgrade(engine)
        async with engine.connect() as conn:
            rows = await conn.execute(select(transactions.c.subject_type, transactions.c.currency))
            return dict(rows.all())  # type: ignore[arg-type]
    finally:
        await engine.dispose()


async def test_0014_gives_earlier_transactions_their_pools_currency_on_sqlite(
    tmp_path: object,
) -> None:
    currencies = await _transactions_before_and_after_0014(sqlite_url(str(tmp_path)))
    assert currencies == {"pool": "JPY", "match": None}  # no such match: left unknown


async def test_0014_gives_earlier_transactions_their_pools_currency_on_postgres() -> None:
    currencies = await on_a_new_postgres_database(_transactions_before_and_after_0014)
    assert currencies == {"pool": "JPY", "match": None}


async def _joins_through_0015(url: str) -> tuple[dict[str, int], str]:
    """Migrate to 0014 and write a raised join as then (one hold, its current version's), then
    migrate on: the join's first_version as 0015 leaves it; then raise it as now (a second
    hold) and try to go back: what the downgrade says."""
    import uuid
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import insert, select, update

    from app.migrate import alembic_config
    from groupbuy.models import Join

    joins = Join.__table__  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    organizer, member, pool = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    engine = create_engine(url, pool_size=1)
    try:
        await upgrade(engine, "0014")
        async with engine.begin() as conn:
            await _users_and_pool(
                conn, users=[organizer, member], pool=pool, currency="CNY", status="open", now=now
            )
            await conn.execute(insert(joins).values(
                id=uuid.uuid4(), pool_id=pool, user_id=member, quantity=3, held_minor=300,
                hold_id=f"pool:{pool}:join:x:v3", version=3, status="active", charged_minor=0,
                created_at=now, updated_at=now,
            ))  # fmt: skip
        await upgrade(engine)
        async with engine.begin() as conn:
            rows = await conn.execute(select(joins.c.version, joins.c.first_version))
            found = {"version": 0, "first_version": 0}
            for version, first_version in rows.all():
                found = {"version": version, "first_version": first_version}
            await conn.execute(update(joins).values(version=4))  # raised: holds v3 and v4

        def downgrade(connection: Connection) -> None:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0014")

        try:
            async with engine.begin() as conn:
                await conn.run_sync(downgrade)
            said = "downgraded"
        except RuntimeError as exc:
            said = str(exc)
        async with engine.begin() as conn:  # left: no hold of it is active any more
            await conn.execute(update(joins).values(status="left"))
            await conn.run_sync(downgrade)
        assert await current_revision(engine) == "0014"
        await upgrade(engine)  # and up again
        assert await current_revision(engine) == _head()
        return found, said
    finally:
        await engine.dispose()


async def test_0015_gives_earlier_joins_their_one_hold_and_keeps_several_from_a_downgrade(
    tmp_path: object,
) -> None:
    found, said = await _joins_through_0015(sqlite_url(str(tmp_path)))
    assert found == {"version": 3, "first_version": 3}
    assert "several holds" in said


async def test_0015_on_postgres() -> None:
    found, said = await on_a_new_postgres_database(_joins_through_0015)
    assert found == {"version": 3, "first_version": 3}
    assert "several holds" in said

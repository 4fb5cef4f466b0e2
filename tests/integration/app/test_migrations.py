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
from tests.support.services import PostgresDatabase, sqlite_url, unavailable


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
    database = PostgresDatabase()
    try:
        await database.create()
    except Exception as exc:
        unavailable(f"PostgreSQL: {exc}")
    try:
        revision, tables = await _upgrade_and_inspect(database.url)
    finally:
        await database.drop()
    assert revision == _head()
    assert "users" in tables

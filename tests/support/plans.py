"""The plans PostgreSQL runs, as run (auto_explain with row counts, nested statements too), for
tests that check a statement reads only the rows it needs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine

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


@asynccontextmanager
async def explaining_engine(
    url: str, *settings: str
) -> AsyncIterator[tuple[AsyncEngine, list[dict[str, Any]]]]:
    """An engine of one connection whose every statement's plan (as run) is appended to the
    list yielded with it; `settings` (SET statements) are run on its connection first."""
    plans: list[dict[str, Any]] = []

    def explain_everything(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        for statement in (*_EXPLAIN_EVERYTHING, *settings):
            cursor.execute(statement)
        cursor.close()
        dbapi_connection.commit()  # (the settings would go with the transaction they began)

        def keep(_: Any, message: Any) -> None:
            _, _, plan = message.message.partition("plan:")
            if plan.strip():
                plans.append(json.loads(plan)["Plan"])

        dbapi_connection.driver_connection.add_log_listener(keep)

    engine = create_engine(url, pool_size=1)
    event.listen(engine.sync_engine, "connect", explain_everything)
    try:
        yield engine, plans
    finally:
        await engine.dispose()


def rows_read(node: dict[str, Any], tables: tuple[str, ...]) -> list[tuple[str, float]]:
    """(table, rows the node read from it) for a plan node and those below it: a scan of one of
    these tables, or of one of its indexes alone (a bitmap index scan, whose rows a BitmapAnd
    may then narrow down before the table is read)."""
    found = []
    table = node.get("Relation Name") or next(
        (t for t in tables if t in node.get("Index Name", "")), None
    )
    if table in tables:
        kept = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
        kept += node.get("Rows Removed by Index Recheck", 0)
        found.append((table, kept * node.get("Actual Loops", 1)))
    for child in node.get("Plans", []):
        found += rows_read(child, tables)
    return found

"""Database: one async engine per process, one session per request or job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as SQLAlchemyAsyncSession
from sqlalchemy.types import TypeDecorator
from sqlmodel.ext.asyncio.session import AsyncSession as SQLModelAsyncSession

__all__ = [
    "AsyncSession",
    "SessionMaker",
    "UTCDateTime",
    "create_engine",
    "create_read_sessionmaker",
    "create_sessionmaker",
    "dialect_insert",
    "on_postgres",
    "session_scope",
]


class AsyncSession(SQLModelAsyncSession):
    """SQLModel's session (`exec` for model queries) that also runs Core statements through
    `execute` without SQLModel's warning: the ledger speaks Core on purpose."""

    execute = SQLAlchemyAsyncSession.execute


SessionMaker = async_sessionmaker[AsyncSession]
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Execution option of the read-only engine: on SQLite its transactions take no write lock.
READ_ONLY = "copool_read_only"


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE so writers queue instead of failing mid-transaction.

    SQLite's default deferred transactions upgrade to a write lock lazily and then fail with
    "database is locked" under concurrency; taking the write lock at BEGIN serialises writers,
    which makes conditional UPDATEs as safe as row locks are on PostgreSQL. Readers (the read-only
    engine) begin deferred: in WAL mode they read a snapshot and never wait for a writer.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook issue BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_engine(
    database_url: str,
    *,
    pool_size: int = 10,
    connect_timeout_s: float = 5.0,
    statement_timeout_s: float = 30.0,
) -> AsyncEngine:
    """An engine for PostgreSQL (asyncpg) or SQLite (aiosqlite), tuned for each.

    On PostgreSQL the pool holds up to 2 x `pool_size` connections (opened as needed, then
    kept). A server that accepts connections but never answers costs at most
    `connect_timeout_s` to connect, and a statement at most `statement_timeout_s` (enforced by the
    server, and by the client a second later in case the server itself hangs).
    """
    if database_url.startswith("sqlite"):
        engine = create_async_engine(
            database_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        database_url,
        # At most 2 x pool_size connections, as before, but all kept once opened: with an
        # overflow, every connection returned past pool_size was closed, and under a steady
        # load above pool_size requests at once each of them was a new PostgreSQL backend
        # (fork, TLS, auth): 100-250 new sessions per 10 s of reads (bench/http.py).
        pool_size=2 * pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=connect_timeout_s + 5,
        connect_args={
            "timeout": connect_timeout_s,
            "command_timeout": statement_timeout_s + 1,
            "server_settings": {"statement_timeout": str(int(statement_timeout_s * 1000))},
        },
    )


def on_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def dialect_insert(session: AsyncSession, table: Table) -> Any:
    """INSERT for the session's backend, so that `.on_conflict_do_nothing()` is available."""
    on_postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
    return (postgresql.insert if on_postgres else sqlite.insert)(table)


def create_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def create_read_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    """Sessions for GET routes: no write lock on SQLite, no BEGIN/ROLLBACK trips on PostgreSQL.

    On PostgreSQL the connection runs in autocommit: each SELECT is its own snapshot, which is
    what a read of one row (or one page by an indexed key) needs.
    """
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "AUTOCOMMIT"
    return async_sessionmaker(
        engine.execution_options(**options), class_=AsyncSession, expire_on_commit=False
    )


async def session_scope(sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    """Yield one session; roll back whatever the use case did not commit."""
    async with sessionmaker() as session:
        try:
            yield session
        finally:
            if session.in_transaction():
                await session.rollback()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite would hand back naive values).

    Microsecond precision on both, so values survive a round trip exactly (hash chains rely on it).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

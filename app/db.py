"""Database: one async engine per process, one session per request or job."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import BigInteger, Column, DateTime, Integer, Table, any_, bindparam, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import DBAPIError, MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as SQLAlchemyAsyncSession
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import greenlet_spawn
from sqlmodel.ext.asyncio.session import AsyncSession as SQLModelAsyncSession

__all__ = [
    "AsyncSession",
    "DriverQuery",
    "ReadSession",
    "ReadSessionMaker",
    "SessionMaker",
    "UTCDateTime",
    "create_engine",
    "create_read_sessionmaker",
    "create_sessionmaker",
    "dialect_insert",
    "driver_fetchrow",
    "on_postgres",
    "row_id_column",
    "session_scope",
    "utc_column",
]


class AsyncSession(SQLModelAsyncSession):
    """SQLModel's session (`exec` for model queries) that also runs Core statements through
    `execute` without SQLModel's warning: the ledger speaks Core on purpose."""

    execute = SQLAlchemyAsyncSession.execute


class ReadSession(AsyncSession):
    """The session of a GET route (the `reader` dependency): reads only, never a write lock.

    Core and ORM reads work as on any session. On PostgreSQL, `driver_fetchrow` on a read
    session that holds no connection yet borrows one from the engine's pool for that statement
    alone, without building SQLAlchemy's Connection and transaction around it (those were
    most of the cost of a one-row read).
    """


SessionMaker = async_sessionmaker[AsyncSession]
ReadSessionMaker = async_sessionmaker[ReadSession]
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Execution option of the read-only engine: on SQLite its transactions take no write lock.
READ_ONLY = "copool_read_only"
#: Put a limit on everything: a read tries this many pooled connections the driver knows are
#: closed (after a database restart) before it runs on the next one, whatever it is.
BORROW_ATTEMPTS = 3


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
        # No pre-ping: a round trip per checkout (and driver_fetchrow's checkout would then
        # need a greenlet every time).
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


def one_of(
    session: AsyncSession, column: ColumnElement[Any], values: Sequence[Any]
) -> ColumnElement[bool]:
    """`column IN values` as the same statement whatever the number of values: on PostgreSQL
    `column = ANY ($n)` with one array parameter. asyncpg prepares (parses and plans) each
    distinct statement text once per connection, and an IN list of n values is a text of its
    own for each n: batches of changing sizes kept preparing anew, one round trip and a plan
    more per statement. SQLite gets the IN list."""
    if on_postgres(session):
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


def any_param(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """`column = ANY (<the array parameter `name`>)`, PostgreSQL: `one_of` for a statement
    built once (a `DriverQuery`), its values given when it runs."""
    return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))


def create_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def create_read_sessionmaker(engine: AsyncEngine) -> ReadSessionMaker:
    """Sessions for GET routes: no write lock on SQLite, no BEGIN/ROLLBACK trips on PostgreSQL.

    On PostgreSQL the connection runs in autocommit: each SELECT is its own snapshot, which is
    what a read of one row (or one page by an indexed key) needs.
    """
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "AUTOCOMMIT"
    return async_sessionmaker(
        engine.execution_options(**options), class_=ReadSession, expire_on_commit=False
    )


async def driver_fetchrow(session: AsyncSession, query: str, *args: Any) -> Any:
    """One row of `query` (asyncpg's SQL, `$1` parameters) run by the driver itself, PostgreSQL
    only; a database error is raised as SQLAlchemy raises it for a statement it runs.

    A read session (bound to an engine) that holds no connection borrows one from the pool for
    this statement and gives it straight back; any other session runs it on its own
    connection, inside whatever transaction it has.
    """
    return await _driver_call(session, "fetchrow", query, args)


async def driver_fetch(session: AsyncSession, query: str, *args: Any) -> list[Any]:
    """Every row of `query`, as `driver_fetchrow` runs it."""
    rows: list[Any] = await _driver_call(session, "fetch", query, args)
    return rows


_ASYNCPG = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


class DriverQuery:
    """A Core statement compiled once for PostgreSQL's driver, then run by `driver_fetch` with
    its parameters by name: what SQLAlchemy does again on every execution (building the
    statement, its cache key, a Result and its rows) is skipped, for reads on the hot path.
    The rows are the driver's (asyncpg records: by position or by column name), its values
    unprocessed by column types, so the statement's columns must be plain ones (a UTC
    timestamp comes back as an aware UTC datetime, as UTCDateTime gives it). The session's
    pending changes are not flushed first: for reads of what is in the database (a batch of
    joins reads before it writes anything)."""

    __slots__ = ("names", "sql")

    def __init__(self, statement: ClauseElement) -> None:
        compiled: Any = statement.compile(dialect=_ASYNCPG)
        self.sql = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())

    async def fetch(self, session: AsyncSession, **params: Any) -> list[Any]:
        return await driver_fetch(session, self.sql, *(params[name] for name in self.names))


async def _driver_call(session: AsyncSession, method: str, query: str, args: Any) -> Any:
    bind = session.bind
    if (
        not isinstance(session, ReadSession)
        or not isinstance(bind, AsyncEngine)
        or session.in_transaction()
    ):
        connection = await session.connection()
        pooled = await connection.get_raw_connection()
        adapter: Any = pooled.dbapi_connection
        try:
            if adapter._transaction is None:
                # What the adapter's cursor does before a statement: BEGIN (unless autocommit),
                # else a first statement sent past it would run, and lock, outside the
                # session's transaction.
                async with adapter._execute_mutex:
                    if adapter._transaction is None:
                        await adapter._start_transaction()
            return await getattr(pooled.driver_connection, method)(query, *args)
        except Exception as exc:
            error = _sqlalchemy_error(session.get_bind().dialect, pooled, exc, query, args)
            if error is None:
                raise
            if error.connection_invalidated:  # as SQLAlchemy does: the pool replaces it
                await connection.invalidate(error)
            raise error from error.orig
    engine = bind.sync_engine
    pooled = await _borrow(engine)
    try:
        answer = await getattr(pooled.driver_connection, method)(query, *args)
    except BaseException as exc:
        error = _sqlalchemy_error(engine.dialect, pooled, exc, query, args)
        await _give_back(pooled, exc)
        if error is None:
            raise
        raise error from error.orig
    await _give_back(pooled, None)
    return answer


async def _borrow(engine: Any) -> PoolProxiedConnection:
    """A connection from the engine's pool, with no Connection or transaction around it; one
    the driver already knows is closed (the server restarted, or ended the session) is replaced
    instead of failing the read. Failing to connect raises what `engine.connect()` raises."""
    dialect = engine.dialect
    try:
        for _ in range(BORROW_ATTEMPTS - 1):
            pooled = await _checkout(engine.pool)
            driver: Any = pooled.driver_connection
            if driver is not None and not driver.is_closed():
                return pooled
            await greenlet_spawn(pooled.invalidate)  # back to the pool, to reconnect when used
        return await _checkout(engine.pool)
    except dialect.loaded_dbapi.Error as exc:  # e.g. too many clients: 503, as from a session
        raise DBAPIError.instance(
            None,
            None,
            exc,
            dialect.loaded_dbapi.Error,
            dialect=dialect,
            connection_invalidated=dialect.is_disconnect(exc, None, None),
        ) from exc


async def _checkout(pool: Any) -> PoolProxiedConnection:
    # A pre-ping (not configured: see create_engine) would be I/O on every checkout.
    if pool.checkedin() and not getattr(pool, "_pre_ping", False):
        try:
            # One waiting in the pool is handed over without I/O, so without a greenlet, which
            # costs as much as the rest of the checkout (~10 us).
            connection: PoolProxiedConnection = pool.connect()
            return connection
        except MissingGreenlet:
            # It had been invalidated and must reconnect first, which needs I/O. The pool
            # undid the attempt (as after any failed connect): try again where I/O can happen.
            pass
    # None waiting: the pool opens one or waits for one, which it does in a greenlet.
    connection = await greenlet_spawn(pool.connect)
    return connection


async def _give_back(pooled: PoolProxiedConnection, error: BaseException | None) -> None:
    """Return the connection to the pool, or discard it if it may not be idle and healthy."""
    driver: Any = pooled.driver_connection
    # A server-side error (a statement timeout, ...) leaves the connection idle and usable; a
    # cancellation, a client-side timeout or a lost connection may leave it mid-statement.
    if (
        driver is None
        or driver.is_closed()
        or driver.is_in_transaction()
        or (error is not None and not isinstance(error, asyncpg.PostgresError))
    ):
        await greenlet_spawn(pooled.invalidate, error if isinstance(error, Exception) else None)
    else:
        pooled.close()  # no transaction to roll back, nothing to close: no I/O


def _sqlalchemy_error(
    dialect: Any, pooled: PoolProxiedConnection, error: BaseException, query: str, args: Any
) -> DBAPIError | None:
    """What SQLAlchemy raises when the driver fails a statement it runs: the dialect's
    translation of `error` wrapped in a DBAPIError subclass (OperationalError, ...), so the
    problem handlers answer exactly as for a statement run through a session (503 for a
    statement timeout or a lost server). None for what is not a driver error (a cancellation,
    a client-side timeout): SQLAlchemy lets those through as they are."""
    if not isinstance(error, Exception):
        return None
    base = dialect.loaded_dbapi.Error
    adapter: Any = pooled.dbapi_connection
    try:
        adapter._handle_exception(error)  # raises the dialect's translation (from `error`)
    except base as translated:
        wrapped: DBAPIError = DBAPIError.instance(
            query,
            tuple(args),
            translated,
            base,
            dialect=dialect,
            connection_invalidated=dialect.is_disconnect(translated, adapter, None),
        )
        return wrapped
    except Exception:  # noqa: S110 - not a driver error: raised as it is
        pass
    return None


async def session_scope(sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    """Yield one session; roll back whatever the use case did not commit."""
    async with sessionmaker() as session:
        try:
            yield session
        finally:
            if session.in_transaction():
                await session.rollback()


def row_id_column(name: str = "row_id", *args: Any, **kwargs: Any) -> Column[int]:
    """A 64-bit integer row id (SQLite's INTEGER, so it stays the rowid) that cursors page by."""
    return Column(name, BigInteger().with_variant(Integer(), "sqlite"), *args, **kwargs)


def utc_column(name: str, *, nullable: bool = False) -> Column[datetime]:
    """A timezone-aware UTC timestamp column."""
    return Column(name, UTCDateTime(), nullable=nullable)


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

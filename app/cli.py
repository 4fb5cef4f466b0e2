"""The `copool` command: serve, worker, migrate, admin."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from app.settings import STATE_DIR, Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from app.db import AsyncSession


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        click.echo(f"copool: configuration error: {exc}", err=True)
        sys.exit(2)


def _run(coro_fn: Callable[[Settings], Any]) -> Any:
    settings = _settings()
    try:
        return asyncio.run(coro_fn(settings))
    except OSError as exc:
        click.echo(f"copool: cannot reach the database: {exc}", err=True)
        sys.exit(1)


@contextlib.asynccontextmanager
async def _session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """One session on a one-connection engine, for a command that does one thing."""
    from app.db import create_engine, create_sessionmaker

    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            yield session
    finally:
        await engine.dispose()


async def _migrate(settings: Settings) -> str | None:
    from app.db import create_engine
    from app.migrate import current_revision, upgrade

    engine = create_engine(settings.database_url, pool_size=1)
    try:
        await upgrade(engine)
        return await current_revision(engine)
    finally:
        await engine.dispose()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """copool: the backend of the collaborative-consumption app.

    Every command reads the same COPOOL_* environment variables (see the README).
    """


@main.command()
def migrate() -> None:
    """Apply every database migration (idempotent)."""
    revision = _run(_migrate)
    click.echo(f"database at revision {revision}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Web worker processes.")  # fmt: skip
def serve(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API.

    In dev (COPOOL_ENV unset or dev) migrations are applied first. With COPOOL_REDIS_URL unset,
    copool uses the Redis on 127.0.0.1:6379 if one listens, else starts a private redis-server
    for this process, and runs the arq worker inside the server. With COPOOL_REDIS_URL set it
    starts nothing: run `copool worker` beside it.
    """
    import uvicorn

    from app.embedded import EmbeddedRedis, EmbeddedRedisError, tcp_listening
    from app.logging import configure_logging
    from app.serving import ProblemHTTPProtocol, reuse_port_supported, run_workers

    settings = _settings()
    configure_logging(settings)
    log = _log()
    if settings.env != "prod":
        revision = _run(_migrate)
        log.info("migrations applied", revision=revision)
    embedded: EmbeddedRedis | None = None
    if not settings.redis_url_explicit:
        os.environ["COPOOL_INLINE_WORKER"] = "1"
        # Private hook for tests: where to look for a local Redis instead of 127.0.0.1:6379.
        local_url = os.environ.get("_COPOOL_LOCAL_REDIS_URL", settings.redis_url)
        if tcp_listening(local_url):
            if local_url != settings.redis_url:
                os.environ["COPOOL_REDIS_URL"] = local_url
        else:
            embedded = EmbeddedRedis(STATE_DIR / "redis")
            try:
                url = embedded.start()
            except EmbeddedRedisError as exc:
                click.echo(f"copool: cannot start the embedded Redis: {exc}", err=True)
                sys.exit(1)
            # Children (uvicorn workers) read it as set; they must not start Redis again.
            os.environ["COPOOL_REDIS_URL"] = url
            log.info("no Redis listening: started an embedded redis-server", url=url)
        log.info("running the arq worker inside the web process")
    proxies = ",".join(settings.trusted_proxies)
    options: dict[str, Any] = {
        # Problem details also for a request that is not HTTP (app/serving.py).
        "http": ProblemHTTPProtocol,
        # No route takes a WebSocket: an upgrade request is an HTTP request like any other, in
        # its turn (uvicorn's WebSocket protocol took the connection over at once, dropping the
        # answers of requests pipelined before it, and refused in plain text).
        "ws": "none",
        "log_config": None,
        "access_log": False,
        # X-Forwarded-For is believed only from COPOOL_TRUSTED_PROXIES (default: no one).
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or None,
    }
    code = 0
    try:
        if workers > 1 and reuse_port_supported():
            # A socket per worker, so that connections spread evenly (app/serving.py).
            try:
                code = run_workers(options, host=host, port=port, workers=workers)
            except OSError as exc:  # the port is taken, or the address is not ours
                click.echo(f"copool: cannot listen on {host}:{port}: {exc}", err=True)
                code = 1
        else:
            # uvicorn stops on SIGINT/SIGTERM after the app's lifespan has shut down (worker,
            # Redis clients, database), then raises the signal again; only then is the
            # embedded Redis stopped. The re-raised Ctrl+C is the end we asked for.
            uvicorn.run(
                "app.main:create_app",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                **options,
            )
    except KeyboardInterrupt:
        pass
    finally:
        if embedded is not None:
            embedded.stop()
            log.info("embedded redis-server stopped")
    if code:
        sys.exit(code)


@main.command()
def worker() -> None:
    """Run the arq worker (jobs and periodic sweeps) against COPOOL_REDIS_URL."""
    from arq.worker import Worker

    from app.logging import configure_logging
    from workers.settings import worker_options

    settings = _settings()
    configure_logging(settings)
    Worker(**worker_options(settings)).run()


@main.group()
def admin() -> None:
    """Operator commands."""


@admin.command("create-user")
@click.option("--email", required=True)
@click.option("--display-name", default="Administrator", show_default=True)
@click.option("--role", "roles", multiple=True, default=["admin"], show_default=True,
              type=click.Choice(["member", "organizer", "driver", "admin"]),
              help="Repeat for several roles.")  # fmt: skip
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="COPOOL_ADMIN_PASSWORD", help="Prompted for when not given.")  # fmt: skip
def create_user(email: str, display_name: str, roles: tuple[str, ...], password: str) -> None:
    """Create an account with the given roles (admin by default)."""
    from app.accounts import service
    from app.accounts.models import Role
    from app.errors import DomainError

    if len(password) < 8:
        click.echo("copool: the password must have at least 8 characters", err=True)
        sys.exit(2)

    async def create(settings: Settings) -> Any:
        async with _session(settings) as session:
            return await service.register_user(
                session,
                email=email,
                password=password,
                display_name=display_name,
                roles=[Role(r) for r in roles],
                now=datetime.now(UTC),
            )

    try:
        user = _run(create)
    except DomainError as exc:  # the email is taken, too long, the name blank, ...
        click.echo(f"copool: {exc}", err=True)
        sys.exit(1)
    click.echo(f"created user {user.id} ({user.email}) with roles {user.roles}")


async def _change_user(settings: Settings, email: str, use_case: Callable[..., Any]) -> Any:
    """Find the user by email, run `use_case(uow, user_id=..., notify=...)`, announce the change.

    The announcement reaches every serving process through Redis; if Redis cannot be reached
    (an embedded one is private to its server) the change still takes effect within
    COPOOL_AUTH_CACHE_TTL_S.
    """
    from redis.asyncio import Redis

    from app.accounts import service
    from app.accounts.errors import UserNotFound
    from app.auth import announce_auth_change
    from app.db import create_engine, create_sessionmaker
    from app.uow import UnitOfWork

    engine = create_engine(settings.database_url, pool_size=1)
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session:
            user = await service.get_user_by_email(session, email)
        if user is None:
            raise UserNotFound(f"no user with email {email.strip().lower()}")

        async def notify(user_id: Any) -> None:
            await announce_auth_change(redis, user_id)

        return await use_case(UnitOfWork(sessionmaker), user_id=user.id, notify=notify)
    finally:
        await redis.aclose()
        await engine.dispose()


def _run_change(email: str, use_case: Callable[..., Any]) -> Any:
    from app.errors import DomainError

    try:
        return _run(lambda settings: _change_user(settings, email, use_case))
    except DomainError as exc:
        click.echo(f"copool: {exc}", err=True)
        sys.exit(1)


_ROLE_CHOICE = click.Choice(["member", "organizer", "driver", "admin"])


@admin.command("grant-role")
@click.argument("email")
@click.argument("role", type=_ROLE_CHOICE)
def grant_role(email: str, role: str) -> None:
    """Give EMAIL's account ROLE; it takes effect on their next request."""
    from app.accounts import service
    from app.accounts.models import Role

    user = _run_change(email, functools.partial(service.grant_role, role=Role(role)))
    click.echo(f"{user.email} now has roles {user.roles}")


@admin.command("revoke-role")
@click.argument("email")
@click.argument("role", type=_ROLE_CHOICE)
def revoke_role(email: str, role: str) -> None:
    """Take ROLE away from EMAIL's account (member cannot be revoked)."""
    from app.accounts import service
    from app.accounts.models import Role

    user = _run_change(email, functools.partial(service.revoke_role, role=Role(role)))
    click.echo(f"{user.email} now has roles {user.roles}")


def _operator() -> str:
    """Who acted, for the audit trail of decisions taken at the command line."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@admin.command("ban")
@click.argument("email")
@click.option("--reason", required=True, help="Why (kept with the account, at most 500 chars).")
def ban(email: str, reason: str) -> None:
    """Ban EMAIL's account: every request it makes is refused (403 banned); audited."""
    from app import admin as decisions

    if not reason.strip() or len(reason) > 500:
        click.echo("copool: --reason must have 1 to 500 characters", err=True)
        sys.exit(2)
    user = _run_change(
        email,
        functools.partial(
            decisions.ban, admin_id=None, actor=_operator(), reason=reason, now=datetime.now(UTC)
        ),
    )
    click.echo(f"banned {user.email}: {user.ban_reason}")


@admin.command("unban")
@click.argument("email")
def unban(email: str) -> None:
    """Lift the ban on EMAIL's account; audited."""
    from app import admin as decisions

    user = _run_change(
        email,
        functools.partial(decisions.unban, admin_id=None, actor=_operator(), now=datetime.now(UTC)),
    )
    click.echo(f"unbanned {user.email}")


@admin.command("verify-insurance")
@click.argument("email")
def verify_insurance(email: str) -> None:
    """Verify EMAIL's pending insurance policy: grants the driver role at once; audited."""
    from app import admin as decisions

    policy = _run_change(
        email,
        functools.partial(
            decisions.verify_pending_insurance, actor=_operator(), now=datetime.now(UTC)
        ),
    )
    click.echo(
        f"verified policy {policy.id} ({policy.provider} {policy.policy_number}, "
        f"expires {policy.expires_at.isoformat()}); {email} may now offer rides"
    )


@admin.command("deactivate")
@click.argument("email")
def deactivate(email: str) -> None:
    """Close EMAIL's account: its tokens stop working and it can no longer log in."""
    from app.accounts import service

    user = _run_change(email, functools.partial(service.deactivate_user, now=datetime.now(UTC)))
    click.echo(f"deactivated {user.email}")


@main.group()
def ledger() -> None:
    """Ledger operations."""


@ledger.command("verify")
def ledger_verify() -> None:
    """Recompute every chain hash and every balance from the transfers.

    Exits 0 when all match, 1 with the first bad entry otherwise.
    """

    async def verify(settings: Settings) -> Any:
        from app.db import create_engine, create_read_sessionmaker, create_sessionmaker
        from payments.verify import verify_ledger

        engine = create_engine(settings.database_url, pool_size=1)
        # SQLite: a reader's snapshot, no write lock; PostgreSQL: verify_ledger takes a
        # REPEATABLE READ READ ONLY transaction itself.
        on_sqlite = engine.dialect.name == "sqlite"
        make = create_read_sessionmaker if on_sqlite else create_sessionmaker
        try:
            async with make(engine)() as session:
                return await verify_ledger(session)
        finally:
            await engine.dispose()

    report = _run(verify)
    click.echo(
        f"entries chained: {report.entries}, not yet chained: {report.unchained}, "
        f"head: seq {report.head_seq} hash {report.head_hash}"
    )
    if not report.ok:
        click.echo(f"copool: ledger verification FAILED at {report.problem}", err=True)
        sys.exit(1)
    click.echo("ledger verified: every hash and every balance matches")


def _log() -> Any:
    import structlog

    return structlog.get_logger("copool.cli")

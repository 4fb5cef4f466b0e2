"""Settings: read once from the environment into one typed, frozen struct."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

import msgspec
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from payments.money import BASIS_POINTS, MAX_AMOUNT_MINOR, is_supported_currency
from trust.config import TrustConfig
from trust.policy import PolicyRules
from trust.score import ScoreParams

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./copool.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: The first market is China.
DEFAULT_CURRENCY = "CNY"
STATE_DIR = Path(".copool")
SECRET_FILE = STATE_DIR / "secret_key"
MIN_SECRET_KEY_CHARS = 32


class Env(StrEnum):
    DEV = "dev"
    TEST = "test"
    PROD = "prod"


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line naming the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    #: True when COPOOL_REDIS_URL was given: then copool never starts a Redis or worker itself.
    redis_url_explicit: bool = False
    secret_key: str
    env: Env = Env.DEV
    token_ttl_s: int = 24 * 3600
    login_limit_per_ip: int = 20
    login_limit_per_email: int = 5
    #: Failed logins per email from every address together, per window (bounds online guessing).
    login_limit_per_email_total: int = 100
    login_window_s: int = 60
    #: How long a process may reuse a user's auth state (roles, standing) without asking the DB.
    auth_cache_ttl_s: int = 5
    #: Proxies whose X-Forwarded-For is believed (IP networks); empty: believe no one.
    trusted_proxies: tuple[str, ...] = ()
    request_max_body_bytes: int = 64 * 1024
    #: Run the arq worker inside the web process (the embedded default of `copool serve`).
    inline_worker: bool = False
    worker_heartbeat_s: int = 10
    log_level: str = "INFO"
    default_currency: str = DEFAULT_CURRENCY
    ledger_chain_interval_s: float = 0.2
    #: PostgreSQL connections per process: up to twice this, kept once opened.
    db_pool_size: int = 10
    #: Seconds to wait for PostgreSQL to accept a connection, and for one statement to answer.
    db_connect_timeout_s: int = 5
    db_statement_timeout_s: int = 15
    #: Seconds a client may take to send a whole request, head and body, from its first byte.
    http_read_timeout_s: int = 30
    #: How long a request in progress owns its Idempotency-Key; a retry after it runs again.
    idempotency_lease_s: int = 60
    #: A withdrawal's hold expires after this (the provider's answer settles it before).
    withdrawal_hold_ttl_s: int = 24 * 3600
    #: The funding provider; the sandbox must be named explicitly when COPOOL_ENV=prod.
    funding_provider: str = "sandbox"
    #: Trust: rating window, score prior, the gate's thresholds (see the README's rule table).
    rating_window_days: int = 14
    score_prior_mean: float = 4.0
    score_prior_weight: int = 5
    score_floor: float = 2.5
    score_floor_min_ratings: int = 5
    experienced_after: int = 10
    new_user_completions: int = 3
    new_user_amount_minor: int = 50_000
    new_user_deposit_bp: int = 2_000
    high_value_pool_minor: int = 1_000_000
    organizer_deposit_bp: int = 1_000
    protection_premium_bp: int = 200
    deposit_hold_ttl_days: int = 45
    #: The platform's fee on a successful pool, basis points of what its members pay.
    pool_fee_bp: int = 300
    #: Carpool (rides/config.py reads these).
    ride_fee_bp: int = 1_000
    ride_match_window_s: float = 3.0
    ride_proposal_ttl_minutes: int = 180
    ride_proposal_lead_minutes: int = 15
    ride_late_cancel_minutes: int = 60
    ride_late_cancel_fee_bp: int = 2_000
    ride_max_added_delay_minutes: int = 15
    circuity_factor: float = 1.3
    average_speed_kmh: float = 40.0
    h3_resolution: int = 8

    def trust(self) -> TrustConfig:
        """The trust rules these settings describe."""
        return TrustConfig(
            score=ScoreParams(
                prior_mean=self.score_prior_mean,
                prior_weight=float(self.score_prior_weight),
                experienced_after=self.experienced_after,
            ),
            rules=PolicyRules(
                score_floor=self.score_floor,
                score_floor_min_ratings=self.score_floor_min_ratings,
                new_user_completions=self.new_user_completions,
                new_user_amount_minor=self.new_user_amount_minor,
                new_user_deposit_bp=self.new_user_deposit_bp,
                high_value_pool_minor=self.high_value_pool_minor,
                organizer_deposit_bp=self.organizer_deposit_bp,
            ),
            rating_window=timedelta(days=self.rating_window_days),
            deposit_ttl=timedelta(days=self.deposit_hold_ttl_days),
            protection_premium_bp=self.protection_premium_bp,
        )


def normalize_database_url(url: str) -> str:
    """Map plain `postgresql://` (and `postgres://`) to asyncpg, plain `sqlite://` to aiosqlite."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise SettingsError(f"COPOOL_DATABASE_URL is not a database URL: {url!r}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in {"postgresql", "postgres"} and driver in {"", "asyncpg"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite" and driver in {"", "aiosqlite"}:
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise SettingsError(
            "COPOOL_DATABASE_URL must be postgresql+asyncpg://... or sqlite+aiosqlite:///..., "
            f"got driver {parsed.drivername!r}"
        )
    return parsed.render_as_string(hide_password=False)


def _redis_url(url: str) -> str:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(
            f"COPOOL_REDIS_URL must start with redis://, rediss:// or unix://, got {url!r}"
        )
    return url


def _currency(code: str) -> str:
    """The default currency must be one copool accepts, or /v1/me would fail for everyone."""
    if not is_supported_currency(code):
        raise SettingsError(
            f"COPOOL_DEFAULT_CURRENCY must be an active ISO 4217 currency code like CNY: {code!r}"
        )
    return code


FUNDING_PROVIDERS = ("sandbox",)


def _funding_provider(environ: Mapping[str, str], env: Env) -> str:
    """The sandbox moves play money: in prod it runs only when named on purpose."""
    raw = environ.get("COPOOL_FUNDING_PROVIDER", "")
    if raw and raw not in FUNDING_PROVIDERS:
        raise SettingsError(
            f"COPOOL_FUNDING_PROVIDER must be one of {', '.join(FUNDING_PROVIDERS)}, got {raw!r}"
        )
    if not raw and env is Env.PROD:
        raise SettingsError(
            "COPOOL_FUNDING_PROVIDER is required when COPOOL_ENV=prod "
            "(set it to sandbox only for a play-money deployment)"
        )
    return raw or "sandbox"


def _int(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _float(environ: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:  # also refuses nan
        raise SettingsError(f"{name} must be between {low} and {high}, got {raw}")
    return value


def _networks(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks, normalised (`10.0.0.1` -> `10.0.0.1/32`)."""
    networks = []
    for item in environ.get(name, "").split(","):
        if item.strip():
            try:
                networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise SettingsError(
                    f"{name} must be comma-separated IP addresses or CIDR networks, got {item!r}"
                ) from None
    return tuple(networks)


def _dev_secret_key() -> str:
    """A dev secret generated once and kept in a local file, so tokens survive restarts."""
    if SECRET_FILE.exists():
        return SECRET_FILE.read_text().strip()
    STATE_DIR.mkdir(exist_ok=True)
    key = secrets.token_urlsafe(48)
    SECRET_FILE.write_text(key)
    SECRET_FILE.chmod(0o600)
    return key


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every COPOOL_* variable once; raise SettingsError with one clear line on a bad one."""
    environ = os.environ if environ is None else environ
    raw_env = environ.get("COPOOL_ENV", Env.DEV.value)
    try:
        env = Env(raw_env)
    except ValueError:
        raise SettingsError(f"COPOOL_ENV must be one of dev, test, prod; got {raw_env!r}") from None

    secret_key = environ.get("COPOOL_SECRET_KEY", "")
    if not secret_key:
        if env is Env.PROD:
            raise SettingsError("COPOOL_SECRET_KEY is required when COPOOL_ENV=prod")
        secret_key = _dev_secret_key()
    if len(secret_key) < MIN_SECRET_KEY_CHARS:
        raise SettingsError(
            f"COPOOL_SECRET_KEY must be at least {MIN_SECRET_KEY_CHARS} characters long"
        )

    redis_raw = environ.get("COPOOL_REDIS_URL", "")
    log_level = environ.get("COPOOL_LOG_LEVEL", "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"COPOOL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR: {log_level}")
    return Settings(
        database_url=normalize_database_url(
            environ.get("COPOOL_DATABASE_URL") or DEFAULT_DATABASE_URL
        ),
        redis_url=_redis_url(redis_raw or DEFAULT_REDIS_URL),
        redis_url_explicit=bool(redis_raw),
        secret_key=secret_key,
        env=env,
        token_ttl_s=_int(environ, "COPOOL_TOKEN_TTL_S", 24 * 3600, 60, 30 * 24 * 3600),
        login_limit_per_ip=_int(environ, "COPOOL_LOGIN_LIMIT_PER_IP", 20, 1, 100_000),
        login_limit_per_email=_int(environ, "COPOOL_LOGIN_LIMIT_PER_EMAIL", 5, 1, 100_000),
        login_limit_per_email_total=_int(
            environ, "COPOOL_LOGIN_LIMIT_PER_EMAIL_TOTAL", 100, 1, 1_000_000
        ),
        login_window_s=_int(environ, "COPOOL_LOGIN_WINDOW_S", 60, 1, 86_400),
        auth_cache_ttl_s=_int(environ, "COPOOL_AUTH_CACHE_TTL_S", 5, 0, 300),
        trusted_proxies=_networks(environ, "COPOOL_TRUSTED_PROXIES"),
        request_max_body_bytes=_int(environ, "COPOOL_MAX_BODY_BYTES", 64 * 1024, 1024, 1 << 24),
        inline_worker=environ.get("COPOOL_INLINE_WORKER", "") == "1",
        worker_heartbeat_s=_int(environ, "COPOOL_WORKER_HEARTBEAT_S", 10, 1, 3600),
        log_level=log_level,
        default_currency=_currency(environ.get("COPOOL_DEFAULT_CURRENCY") or DEFAULT_CURRENCY),
        db_pool_size=_int(environ, "COPOOL_DB_POOL_SIZE", 10, 1, 500),
        db_connect_timeout_s=_int(environ, "COPOOL_DB_CONNECT_TIMEOUT_S", 5, 1, 300),
        db_statement_timeout_s=_int(environ, "COPOOL_DB_STATEMENT_TIMEOUT_S", 15, 1, 3600),
        http_read_timeout_s=_int(environ, "COPOOL_HTTP_READ_TIMEOUT_S", 30, 1, 3600),
        idempotency_lease_s=_int(environ, "COPOOL_IDEMPOTENCY_LEASE_S", 60, 1, 3600),
        withdrawal_hold_ttl_s=_int(
            environ, "COPOOL_WITHDRAWAL_HOLD_TTL_S", 24 * 3600, 60, 30 * 24 * 3600
        ),
        funding_provider=_funding_provider(environ, env),
        rating_window_days=_int(environ, "COPOOL_RATING_WINDOW_DAYS", 14, 1, 365),
        score_prior_mean=_float(environ, "COPOOL_SCORE_PRIOR_MEAN", 4.0, 1.0, 5.0),
        score_prior_weight=_int(environ, "COPOOL_SCORE_PRIOR_WEIGHT", 5, 1, 1_000),
        score_floor=_float(environ, "COPOOL_SCORE_FLOOR", 2.5, 1.0, 5.0),
        score_floor_min_ratings=_int(environ, "COPOOL_SCORE_FLOOR_MIN_RATINGS", 5, 1, 10_000),
        experienced_after=_int(environ, "COPOOL_EXPERIENCED_AFTER", 10, 1, 10_000),
        new_user_completions=_int(environ, "COPOOL_NEW_USER_COMPLETIONS", 3, 0, 10_000),
        new_user_amount_minor=_int(
            environ, "COPOOL_NEW_USER_AMOUNT_MINOR", 50_000, 0, MAX_AMOUNT_MINOR
        ),
        new_user_deposit_bp=_int(environ, "COPOOL_NEW_USER_DEPOSIT_BP", 2_000, 0, BASIS_POINTS),
        high_value_pool_minor=_int(
            environ, "COPOOL_HIGH_VALUE_POOL_MINOR", 1_000_000, 0, MAX_AMOUNT_MINOR
        ),
        organizer_deposit_bp=_int(environ, "COPOOL_ORGANIZER_DEPOSIT_BP", 1_000, 0, BASIS_POINTS),
        protection_premium_bp=_int(environ, "COPOOL_PROTECTION_PREMIUM_BP", 200, 0, BASIS_POINTS),
        deposit_hold_ttl_days=_int(environ, "COPOOL_DEPOSIT_HOLD_TTL_DAYS", 45, 1, 365),
        pool_fee_bp=_int(environ, "COPOOL_POOL_FEE_BP", 300, 0, BASIS_POINTS),
        ride_fee_bp=_int(environ, "COPOOL_RIDE_FEE_BP", 1_000, 0, BASIS_POINTS),
        ride_match_window_s=_float(environ, "COPOOL_RIDE_MATCH_WINDOW_S", 3.0, 0.0, 300.0),
        ride_proposal_ttl_minutes=_int(
            environ, "COPOOL_RIDE_PROPOSAL_TTL_MINUTES", 180, 1, 7 * 24 * 60
        ),
        ride_proposal_lead_minutes=_int(environ, "COPOOL_RIDE_PROPOSAL_LEAD_MINUTES", 15, 0, 1440),
        ride_late_cancel_minutes=_int(environ, "COPOOL_RIDE_LATE_CANCEL_MINUTES", 60, 0, 1440),
        ride_late_cancel_fee_bp=_int(
            environ, "COPOOL_RIDE_LATE_CANCEL_FEE_BP", 2_000, 0, BASIS_POINTS
        ),
        ride_max_added_delay_minutes=_int(
            environ, "COPOOL_RIDE_MAX_ADDED_DELAY_MINUTES", 15, 0, 240
        ),
        circuity_factor=_float(environ, "COPOOL_CIRCUITY_FACTOR", 1.3, 1.0, 5.0),
        average_speed_kmh=_float(environ, "COPOOL_AVERAGE_SPEED_KMH", 40.0, 1.0, 300.0),
        h3_resolution=_int(environ, "COPOOL_H3_RESOLUTION", 8, 5, 10),
    )

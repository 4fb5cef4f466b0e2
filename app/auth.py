"""Authentication (JWT bearer tokens via Litestar's JWTAuth), role guards, login rate limits."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
import structlog
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import JWTAuth, Token
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.accounts.models import Role, User
from app.settings import Settings

log = structlog.get_logger("copool.auth")

PUBLIC_PATHS = ["^/v1/auth/", "^/v1/health", "^/schema"]
#: OpenAPI security of a route that needs no token (an empty requirement overrides the global).
PUBLIC: list[dict[str, list[str]]] = [{}]


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: read from the token alone, so authenticating costs no query."""

    user_id: UUID
    roles: frozenset[Role]


async def retrieve_principal(token: Token, _connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
    try:
        roles = frozenset(Role(r) for r in token.extras.get("roles", []))
        return Principal(user_id=UUID(token.sub), roles=roles)
    except (ValueError, TypeError):
        return None


def create_jwt_auth(settings: Settings) -> JWTAuth[Principal, Any]:
    return JWTAuth[Principal, Any](
        retrieve_user_handler=retrieve_principal,
        token_secret=settings.secret_key,
        exclude=PUBLIC_PATHS,
        default_token_expiration=timedelta(seconds=settings.token_ttl_s),
        description="A token from POST /v1/auth/register or /v1/auth/login.",
    )


def issue_token(jwt_auth: JWTAuth[Principal, Any], user: User) -> str:
    return jwt_auth.create_token(
        identifier=str(user.id), token_extras={"roles": [r.value for r in user.role_list]}
    )


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthorizedException("a bearer token is required")
    return user


def require_role(
    *roles: Role,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """A guard: the caller needs one of these roles (admin passes every role check)."""
    allowed = frozenset(roles) | {Role.ADMIN}

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not principal_of(connection).roles & allowed:
            names = ", ".join(sorted(r.value for r in roles))
            raise PermissionDeniedException(f"this action needs the role: {names}")

    return guard


# INCR the window counter, start its expiry on the first hit, answer the seconds left if over.
_HIT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then return math.max(redis.call('TTL', KEYS[1]), 1) end
return 0
"""
# How long until the window ends, if the counter is already at its limit.
_PEEK_SCRIPT = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return math.max(redis.call('TTL', KEYS[1]), 1) end
return 0
"""


class RateLimiter:
    """Fixed-window counters in Redis. If Redis is down, limits fail open (and log it)."""

    def __init__(self, redis: Redis, *, prefix: str = "copool:rl:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._hit = redis.register_script(_HIT_SCRIPT)
        self._peek = redis.register_script(_PEEK_SCRIPT)

    async def hit(self, key: str, *, limit: int, window_s: int) -> int:
        """Count one event; return 0 if allowed, else the seconds until it will be."""
        try:
            return int(await self._hit(keys=[self._prefix + key], args=[window_s, limit]))
        except RedisError as exc:
            log.warning("rate limiter unavailable; allowing", key=key, error=str(exc))
            return 0

    async def blocked_for(self, key: str, *, limit: int) -> int:
        """Seconds until `key` may act again (0 when it may now), without counting an event."""
        try:
            return int(await self._peek(keys=[self._prefix + key], args=[limit]))
        except RedisError as exc:
            log.warning("rate limiter unavailable; allowing", key=key, error=str(exc))
            return 0

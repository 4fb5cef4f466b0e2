"""Authentication (JWT bearer tokens via Litestar's JWTAuth), role guards, login rate limits.

A token only says who the caller is. What they may do (roles, banned, deactivated) comes from the
user's row, through a short-lived per-process `AuthCache`: a change is committed with a bumped
`users.auth_version`, then announced on a Redis channel, and every process drops that user's entry,
so it takes effect on the next request. The cache's TTL bounds staleness while Redis is down.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
import structlog
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.accounts.errors import Banned
from app.accounts.models import Role, User
from app.accounts.service import (
    AUTH_STATES_MAX_USERS,
    AuthState,
    load_auth_states,
)
from app.db import ReadSessionMaker
from app.errors import ServiceBusy
from app.settings import Settings

log = structlog.get_logger("copool.auth")

PUBLIC_PATHS = ["^/v1/auth/", "^/v1/health", "^/schema"]
#: OpenAPI security of a route that needs no token (an empty requirement overrides the global).
PUBLIC: list[dict[str, list[str]]] = [{}]
#: The Redis channel on which a committed change to a user's roles or standing is announced.
AUTH_CHANNEL = "copool:auth:changed"
#: Put a limit on everything: beyond this many users, the oldest cached entries are dropped.
AUTH_CACHE_MAX_ENTRIES = 100_000
#: An entry lives between (1 - this) x TTL and the TTL, drawn for each load: users whose entries
#: were loaded together (a crowd arriving at once) then expire apart, instead of all reloading
#: in the same instant every TTL (which showed as a latency spike every 5 s under load).
TTL_SPREAD = 0.5
#: `keep_fresh` looks this many times a TTL for entries that would expire before its next look
#: (twice its interval ahead, so a look that comes late under load still finds them in time).
REFRESHES_PER_TTL = 5
REFRESH_HORIZON = 2.0
MIN_REFRESH_INTERVAL_S = 0.1
RESUBSCRIBE_DELAY_S = 1.0
RESUBSCRIBE_MAX_DELAY_S = 30.0
LISTEN_POLL_S = 0.5


class Principal(msgspec.Struct, frozen=True):
    """Who is calling and what they may do, as of this request."""

    user_id: UUID
    roles: frozenset[Role]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a read's failure as seen: the requests that waited for it may all have gone."""
    if not future.cancelled():
        future.exception()


class _Entry:
    """A cached auth state: until when it may be used, and whether a request used it since it
    was read."""

    __slots__ = ("expires_at", "state", "used")

    def __init__(self, expires_at: float, state: AuthState | None) -> None:
        self.expires_at = expires_at
        self.state = state
        self.used = False


#: Reads the auth states of at most AUTH_STATES_MAX_USERS users (absent users are left out).
LoadMany = Callable[[Sequence[UUID]], Awaitable[dict[UUID, AuthState]]]


class AuthCache:
    """Each user's auth state for at most `ttl_s`, dropped as soon as a change is announced.

    Absent users are cached too (as None), so a flood of tokens for a deleted user or from another
    database costs one query per user per TTL, not one per request. `keep_fresh` reloads the
    entries that requests are using before they expire, many users to a statement, so a
    request rarely waits for a load of its own while no entry is ever older than the TTL.
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int = AUTH_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        spread: Callable[[], float] = random.random,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._spread = spread
        self._entries: dict[UUID, _Entry] = {}
        # Misses waiting for the next read, and those of the read under way.
        self._waiting: dict[UUID, asyncio.Future[AuthState | None]] = {}
        self._reading: dict[UUID, asyncio.Future[AuthState | None]] = {}
        self._reader: asyncio.Task[None] | None = None
        # Bumped by every invalidation: a load that overlapped one may have read the old row,
        # so its result is used for that request but not kept.
        self._generation = 0

    @property
    def refresh_interval_s(self) -> float:
        """How often `keep_fresh` looks for entries about to expire."""
        return max(self._ttl_s / REFRESHES_PER_TTL, MIN_REFRESH_INTERVAL_S)

    async def get(self, user_id: UUID, load_many: LoadMany) -> AuthState | None:
        """The user's cached state, or, on a miss, the state read for it: the misses of every
        request waiting meanwhile are read together, AUTH_STATES_MAX_USERS to a statement (a
        crowd of users arriving at once costs a few reads, not one each)."""
        entry = self._entries.get(user_id)
        if entry is not None and entry.expires_at > self._clock():
            entry.used = True
            return entry.state
        future = self._waiting.get(user_id) or self._reading.get(user_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self._waiting[user_id] = future
            if self._reader is None:
                self._reader = asyncio.create_task(self._read_waiting(load_many))
        # Shielded: a request that goes away does not cancel the read the others wait for.
        return await asyncio.shield(future)

    async def _read_waiting(self, load_many: LoadMany) -> None:
        """Read the waiting misses, a statement at a time, until none is left."""
        try:
            while self._waiting:
                chunk = list(itertools.islice(self._waiting, AUTH_STATES_MAX_USERS))
                self._reading = {user_id: self._waiting.pop(user_id) for user_id in chunk}
                generation, read_at = self._generation, self._clock()
                try:
                    states = await load_many(chunk)
                except Exception as exc:  # each request answers it (503 for a database down)
                    for future in self._reading.values():
                        future.set_exception(exc)
                    continue
                # A change announced during the read may have been read before it: what was
                # read answers these requests but is not kept.
                keep = self._ttl_s > 0 and generation == self._generation
                for user_id, future in self._reading.items():
                    state = states.get(user_id)
                    if keep:
                        self._put(user_id, state, read_at)
                    future.set_result(state)
                self._reading = {}
        finally:
            self._reader = None
            for future in [*self._reading.values(), *self._waiting.values()]:
                if not future.done():  # cancelled (a shutdown): nobody waits forever
                    future.set_exception(ServiceBusy("the sign-in check was interrupted"))
            self._reading, self._waiting = {}, {}

    def _put(self, user_id: UUID, state: AuthState | None, read_at: float) -> None:
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest insertion
        self._entries.pop(user_id, None)
        lifetime = self._ttl_s * (1 - TTL_SPREAD * self._spread())
        self._entries[user_id] = _Entry(read_at + lifetime, state)

    async def refresh(self, load_many: LoadMany) -> int:
        """Reload every entry that expires before the next refresh is due and that a request used
        since it was read, AUTH_STATES_MAX_USERS to a statement; forget the others (a request
        loads them again, if one ever comes). Answers how many were reloaded."""
        now = self._clock()
        horizon = now + REFRESH_HORIZON * self.refresh_interval_s
        due: list[tuple[UUID, _Entry]] = []
        for user_id, entry in list(self._entries.items()):
            if entry.expires_at > horizon:
                continue
            if entry.used:
                due.append((user_id, entry))
            else:
                del self._entries[user_id]
        reloaded = 0
        for start in range(0, len(due), AUTH_STATES_MAX_USERS):
            chunk = due[start : start + AUTH_STATES_MAX_USERS]
            read_at = self._clock()
            states = await load_many([user_id for user_id, _ in chunk])
            for user_id, entry in chunk:
                # Only the entry that was read for: an announced change (invalidate, clear)
                # removed it, and a request that loaded the user meanwhile replaced it, so a
                # row read before the change is never kept.
                if self._entries.get(user_id) is entry:
                    entry.state = states.get(user_id)
                    entry.expires_at = read_at + self._ttl_s
                    entry.used = False
                    # To the end of the insertion order, so that the cache, once full, drops
                    # the users nobody is using rather than the busiest.
                    self._entries[user_id] = self._entries.pop(user_id)
                    reloaded += 1
        return reloaded

    async def keep_fresh(self, load_many: LoadMany) -> None:
        """Refresh entries about to expire every `refresh_interval_s`, until cancelled; a failed
        refresh is logged, and its entries expire and load on demand."""
        while self._ttl_s > 0:
            await asyncio.sleep(self.refresh_interval_s)
            try:
                await self.refresh(load_many)
            except Exception as exc:  # the database is down or busy: requests load themselves
                log.warning("auth cache refresh failed", error=str(exc))

    def invalidate(self, user_id: UUID) -> None:
        self._generation += 1
        self._entries.pop(user_id, None)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    async def listen(self, redis: Redis) -> None:
        """Drop entries as changes are announced, until cancelled; resubscribe after errors."""
        task = asyncio.current_task()
        delay_s = RESUBSCRIBE_DELAY_S
        # redis-py's get_message(timeout=...) can swallow a cancellation; check for one each turn.
        while task is None or not task.cancelling():
            try:
                async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(AUTH_CHANNEL)
                    # Whatever was announced while we were not listening is lost: start afresh.
                    self.clear()
                    delay_s = RESUBSCRIBE_DELAY_S
                    while task is None or not task.cancelling():
                        message = await pubsub.get_message(timeout=LISTEN_POLL_S)
                        if message is not None and message.get("type") == "message":
                            self._on_message(message.get("data"))
            except (RedisError, OSError) as exc:
                log.warning("auth change channel unavailable; cache entries expire by TTL",
                            error=str(exc))  # fmt: skip
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RESUBSCRIBE_MAX_DELAY_S)
        raise asyncio.CancelledError

    def _on_message(self, data: Any) -> None:
        try:
            user_id = UUID(data.decode() if isinstance(data, bytes) else str(data))
        except ValueError:
            return
        self.invalidate(user_id)


def auth_states_loader(read_sessionmaker: ReadSessionMaker) -> LoadMany:
    """What the auth cache reads with: one read session a statement. A read session never
    holds a write lock on SQLite; on PostgreSQL its statement borrows a pooled connection of
    its own and the session never begins."""

    async def load_many(user_ids: Sequence[UUID]) -> dict[UUID, AuthState]:
        async with read_sessionmaker() as session:
            return await load_auth_states(session, user_ids)

    return load_many


async def announce_auth_change(redis: Redis, user_id: UUID) -> None:
    """Tell every process to forget this user's cached auth state (best effort: TTL backs it)."""
    try:
        await redis.publish(AUTH_CHANNEL, str(user_id))
    except (RedisError, OSError) as exc:
        log.warning("could not announce an auth change; caches expire by TTL",
                    user_id=str(user_id), error=str(exc))  # fmt: skip


def auth_change_notifier(cache: AuthCache, redis: Redis) -> Callable[[UUID], Awaitable[None]]:
    """Forget the user here at once, then tell the other processes."""

    async def notify(user_id: UUID) -> None:
        cache.invalidate(user_id)
        await announce_auth_change(redis, user_id)

    return notify


async def retrieve_principal(
    token: Token, connection: ASGIConnection[Any, Any, Any, Any]
) -> Principal | None:
    """The caller's current roles; None (401) for an unknown or deactivated user; Banned (403)."""
    try:
        user_id = UUID(token.sub)
    except (ValueError, TypeError):
        return None
    state = connection.app.state
    cache: AuthCache = state.auth_cache
    auth = await cache.get(user_id, state.load_auth_states)
    if auth is None or auth.deactivated:
        return None
    if auth.banned:
        raise Banned("this account is banned; contact support")
    return Principal(user_id=user_id, roles=auth.roles)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in trusted)


def _is_trusted(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[str, ...]) -> str:
    """The address a request comes from: the peer, unless the peer is a trusted proxy.

    Then X-Forwarded-For is read from the right (each proxy appends the address it saw) and
    the first hop that is not itself a trusted proxy is the client; anything left of it may
    have been written by the client and is ignored.
    """
    networks = _networks(trusted)
    if not networks or not _is_trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


def request_address(connection: ASGIConnection[Any, Any, Any, Any], settings: Settings) -> str:
    """The client address rate limits are keyed by (see `client_address`)."""
    peer = connection.client.host if connection.client else "unknown"
    return client_address(peer, connection.headers.get("x-forwarded-for"), settings.trusted_proxies)


#: Put a limit on everything: beyond this many tokens, the oldest decoded ones are dropped.
DECODED_TOKENS_MAX_ENTRIES = 10_000


class DecodedTokens:
    """Tokens this process has already verified, until their `exp`: a token is a pure function
    of its text and the secret, so checking its signature again would give the same answer.

    Only tokens that passed verification are kept (a forged or expired token is checked, and
    refused, every time); what the token's user may do is still asked of `AuthCache` on every
    request, so bans and role changes are not delayed by this cache.
    """

    def __init__(
        self,
        *,
        max_entries: int = DECODED_TOKENS_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Token]] = {}

    def get(self, secret: str, encoded: str) -> Token | None:
        entry = self._entries.get((secret, encoded))
        if entry is None:
            return None
        if entry[0] <= self._clock():  # PyJWT's rule: expired once `exp <= now`
            del self._entries[(secret, encoded)]
            return None
        return entry[1]

    def put(self, secret: str, encoded: str, token: Token) -> None:
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest insertion
        self._entries[(secret, encoded)] = (token.exp.timestamp(), token)


#: One per process, shared by every route's middleware (Litestar builds one per route); keyed by
#: the secret too, so apps with different secrets in one process never share a token.
DECODED_TOKENS = DecodedTokens()


class CachingJWTAuthenticationMiddleware(JWTAuthenticationMiddleware):
    """Litestar's JWT middleware, verifying each distinct token once per process (HMAC and
    claim parsing were a fifth of an authenticated one-row read)."""

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = DECODED_TOKENS.get(self.token_secret, encoded_token)
        if token is None:
            token = self.token_cls.decode(
                encoded_token=encoded_token,
                secret=self.token_secret,
                algorithm=self.algorithm,
                audience=self.token_audience,
                issuer=self.token_issuer,
                require_claims=self.require_claims,
                verify_exp=self.verify_expiry,
                verify_nbf=self.verify_not_before,
                strict_audience=self.strict_audience,
            )
            DECODED_TOKENS.put(self.token_secret, encoded_token, token)
        user = await self.retrieve_user_handler(token, connection)
        revoked = False
        if self.revoked_token_handler is not None:
            revoked = await self.revoked_token_handler(token, connection)
        if not user or revoked:
            raise NotAuthorizedException()
        return AuthenticationResult(user=user, auth=token)


def create_jwt_auth(settings: Settings) -> JWTAuth[Principal, Any]:
    return JWTAuth[Principal, Any](
        retrieve_user_handler=retrieve_principal,
        authentication_middleware_class=CachingJWTAuthenticationMiddleware,
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
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    """A guard: the caller needs one of these roles (admin passes every role check). A coroutine
    function: Litestar runs a plain function guard in its thread pool."""
    allowed = frozenset(roles) | {Role.ADMIN}

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
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


# Remember a member for TTL seconds; past the size limit start the set afresh.
_REMEMBER_SCRIPT = """
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[3]) then redis.call('DEL', KEYS[1]) end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class RateLimiter:
    """Fixed-window counters in Redis. If Redis is down, limits fail open (and log it)."""

    def __init__(self, redis: Redis, *, prefix: str = "copool:rl:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._hit = redis.register_script(_HIT_SCRIPT)
        self._peek = redis.register_script(_PEEK_SCRIPT)
        self._remember = redis.register_script(_REMEMBER_SCRIPT)

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

    async def remember(self, key: str, member: str, *, ttl_s: int, max_members: int) -> None:
        """Add `member` to the set `key` (kept `ttl_s` after the last addition)."""
        try:
            await self._remember(keys=[self._prefix + key], args=[member, ttl_s, max_members])
        except RedisError as exc:
            log.warning("rate limiter unavailable; not remembering", key=key, error=str(exc))

    async def knows(self, key: str, member: str) -> bool:
        """Was `member` remembered in the set `key` (False if Redis cannot say)?"""
        try:
            return bool(await self._redis.sismember(self._prefix + key, member))  # type: ignore[misc]
        except RedisError as exc:
            log.warning("rate limiter unavailable", key=key, error=str(exc))
            return False

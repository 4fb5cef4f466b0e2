"""Idempotency-Key for every POST that moves money, implemented once (Stripe semantics).

A key is claimed atomically (INSERT ... ON CONFLICT DO NOTHING) together with a hash of the
canonical request (JSON re-encoded with sorted keys). The first request runs and its answer is
stored; a replay with the same key and body gets that answer byte for byte; the same key with
another body is 409; a duplicate that arrives while the first still runs is 409 too. A claim is a
lease (COPOOL_IDEMPOTENCY_LEASE_S): if the process dies mid-request, a retry after the lease runs
the request again, and since the route derives every money movement's id from the claim (owner,
key and the claim's generation), the re-run finishes the crashed run's work instead of repeating
it. A server error ends the lease at once so the client can retry; the retry keeps the
generation (money may have moved before the error) and so finishes the same work. Keys are
scoped to the caller and kept for 24 hours; a key used again after it was forgotten is a new
request.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from litestar.enums import ScopeType
from sqlalchemy import Column, Integer, LargeBinary, String, delete, or_, update
from sqlmodel import Field, SQLModel, col, select

from app.auth import Principal
from app.db import UTCDateTime, dialect_insert

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

    from app.db import SessionMaker

log = structlog.get_logger("copool.idempotency")
HEADER = b"idempotency-key"
KEY_TTL = timedelta(hours=24)
_VALID_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PROBLEM_JSON = b"application/problem+json"
#: Where the middleware leaves the request's Claim for the route (see `idempotent_id`).
SCOPE_KEY = "copool_idempotency_claim"


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_keys"

    #: Whose key it is: the caller's user id (keys of different users never collide).
    owner: str = Field(sa_column=Column(String(64), primary_key=True))
    key: str = Field(sa_column=Column(String(128), primary_key=True))
    request_hash: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    #: While the first request runs: until when it owns the key. A retry after that runs again.
    locked_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    #: NULL while the first request is still running.
    status_code: int | None = Field(default=None, sa_column=Column(Integer))
    content_type: str | None = Field(default=None, max_length=100)
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


TABLE = IdempotencyRecord.__table__  # type: ignore[attr-defined]


def _problem(status: int, type_: str, title: str, detail: str) -> tuple[int, bytes, bytes]:
    body = msgspec.json.encode({"type": type_, "title": title, "status": status, "detail": detail})
    return status, PROBLEM_JSON, body


async def _send_answer(
    send: Send, status: int, content_type: bytes, body: bytes, replayed: bool = False
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _CutOff(Exception):
    """The connection ended before the whole body arrived."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None if it is larger than `limit`; _CutOff if it never
    arrives whole."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _CutOff
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Claim(msgspec.Struct, frozen=True):
    """The caller's hold on a key: `generation` (when the key was first claimed) makes the ids
    derived from it differ from those of an older use of the same key that was forgotten."""

    owner: str
    key: str
    generation: datetime
    #: When this run's lease ends; it doubles as the run's token: a run that outlived its lease
    #: (and was taken over) can no longer finish or release the key.
    lease_until: datetime

    def derived_id(self) -> str:
        """A digest of owner, key and generation: fits any id column, whatever the key."""
        material = f"{self.owner}\x00{self.key}\x00{self.generation.isoformat()}"
        return hashlib.sha256(material.encode()).hexdigest()[:40]


class _Store:
    def __init__(self, sessionmaker: SessionMaker) -> None:
        self._sessionmaker = sessionmaker

    async def claim(
        self, owner: str, key: str, request_hash: str, now: datetime, lease: timedelta
    ) -> Claim | IdempotencyRecord:
        """Our claim on the key, or the record that someone else holds (or finished)."""
        async with self._sessionmaker() as session:
            # Forget a key older than its time to live, so it may be used again.
            await session.exec(
                delete(TABLE).where(
                    TABLE.c.owner == owner,
                    TABLE.c.key == key,
                    TABLE.c.created_at < now - KEY_TTL,
                )
            )
            inserted = await session.exec(
                dialect_insert(session, TABLE)
                .values(
                    owner=owner,
                    key=key,
                    request_hash=request_hash,
                    created_at=now,
                    locked_until=now + lease,
                )
                .on_conflict_do_nothing(index_elements=["owner", "key"])
                .returning(TABLE.c.created_at)
            )
            lease_until = now + lease
            generation = inserted.scalar()
            if generation is None:
                # A run that crashed (or outlived its lease) gives the key up to its retry.
                taken_over = await session.exec(
                    update(TABLE)
                    .where(
                        TABLE.c.owner == owner,
                        TABLE.c.key == key,
                        TABLE.c.request_hash == request_hash,
                        TABLE.c.status_code.is_(None),
                        or_(TABLE.c.locked_until.is_(None), TABLE.c.locked_until <= now),
                    )
                    .values(locked_until=now + lease)
                    .returning(TABLE.c.created_at)
                )
                generation = taken_over.scalar()
            await session.commit()
            if generation is not None:
                return Claim(owner, key, generation, lease_until)
            found = await session.exec(
                select(IdempotencyRecord).where(
                    col(IdempotencyRecord.owner) == owner, col(IdempotencyRecord.key) == key
                )
            )
            record = found.first()
            if record is None:  # forgotten between the two statements: a new request after all
                return await self.claim(owner, key, request_hash, now, lease)
            return record

    async def _update_own(self, claim: Claim, **values: Any) -> None:
        """Change the key's row only while this run still holds its lease."""
        async with self._sessionmaker() as session:
            await session.exec(
                update(TABLE)
                .where(
                    TABLE.c.owner == claim.owner,
                    TABLE.c.key == claim.key,
                    TABLE.c.created_at == claim.generation,
                    TABLE.c.locked_until == claim.lease_until,
                    TABLE.c.status_code.is_(None),
                )
                .values(**values)
            )
            await session.commit()

    async def finish(self, claim: Claim, status: int, content_type: str, body: bytes) -> None:
        await self._update_own(
            claim, status_code=status, content_type=content_type, body=body, locked_until=None
        )

    async def release(self, claim: Claim) -> None:
        """End the lease now, keeping the generation: money may already have moved, so the
        retry must derive the same ids and finish that work, not start over."""
        await self._update_own(claim, locked_until=None)


async def purge_expired_keys(sessionmaker: SessionMaker, now: datetime) -> int:
    """Delete keys past their time to live (a worker job)."""
    async with sessionmaker() as session:
        result: Any = await session.exec(delete(TABLE).where(TABLE.c.created_at < now - KEY_TTL))
        await session.commit()
        return int(result.rowcount or 0)


def canonical_request_hash(method: str, path: bytes, query: bytes, body: bytes) -> str:
    """A hash of what the request asks for: a JSON body is parsed and re-encoded with sorted
    keys, so a retry whose encoder orders keys or spaces differently is the same request."""
    # Not JSON, or nested past what the decoder will follow: hashed as sent (the route refuses it).
    with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        body = msgspec.json.encode(msgspec.json.decode(body), order="sorted")
    digest = hashlib.sha256()
    for part in (method.encode(), path, query, body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def idempotent_id(scope: Scope | Any) -> str | None:
    """The id a route derives its money movements from, if the request carries a key."""
    claim = scope.get(SCOPE_KEY)
    return claim.derived_id() if isinstance(claim, Claim) else None


def idempotency_middleware(app: ASGIApp) -> ASGIApp:
    """Applies to POST routes whose handler sets `opt={"idempotent": True}`."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        # Anything but an idempotent POST passes straight through, before any header is read.
        handler = scope.get("route_handler")
        if (
            scope["type"] != ScopeType.HTTP
            or scope.get("method") != "POST"
            or handler is None
            or not handler.opt.get("idempotent")
        ):
            await app(scope, receive, send)
            return
        keys = [v for k, v in scope.get("headers", []) if k == HEADER]
        if not keys:
            await app(scope, receive, send)
            return
        key = keys[0].decode("latin-1")
        invalid = None
        if len(keys) > 1:  # (which one would a retry repeat?)
            invalid = "Idempotency-Key is given more than once; send one"
        elif not _VALID_KEY.match(key):
            invalid = "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : -"
        if invalid is not None:
            await _send_answer(
                send, *_problem(422, "validation-error", "Unprocessable Entity", invalid)
            )
            return
        state = scope["litestar_app"].state
        try:
            body = await _read_body(receive, state.settings.request_max_body_bytes)
        except _CutOff:
            # Nobody is left to answer, and the key stays unclaimed: a part of a body must
            # not make the retry with the whole of it a conflict.
            return
        if body is None:
            await _send_answer(
                send,
                *_problem(413, "request-too-large", "Request Entity Too Large", "body too large"),
            )
            return
        user = scope.get("user")
        owner = str(user.user_id) if isinstance(user, Principal) else "anonymous"
        request_hash = canonical_request_hash(
            scope["method"],
            scope.get("raw_path") or scope["path"].encode(),
            scope.get("query_string", b""),
            body,
        )
        store = _Store(state.sessionmaker)
        lease = timedelta(seconds=state.settings.idempotency_lease_s)
        claim = await store.claim(owner, key, request_hash, state.clock(), lease)

        if not isinstance(claim, Claim):
            if claim.request_hash != request_hash:
                answer = _problem(
                    409,
                    "idempotency-key-reused",
                    "Idempotency-Key reused",
                    "this Idempotency-Key was used with a different request",
                )
            elif claim.status_code is None:
                answer = _problem(
                    409,
                    "idempotency-request-in-progress",
                    "Request in progress",
                    "a request with this Idempotency-Key is still being processed; retry later",
                )
            else:
                stored_type = (claim.content_type or "application/json").encode()
                await _send_answer(send, claim.status_code, stored_type, claim.body or b"", True)
                return
            await _send_answer(send, *answer)
            return
        scope[SCOPE_KEY] = claim  # type: ignore[literal-required]

        replayed_body = False

        async def receive_body() -> ReceiveMessage:
            nonlocal replayed_body
            if not replayed_body:
                replayed_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status, content_type, chunks = 500, "application/json", list[bytes]()
        stored = False

        async def capture(message: Message) -> None:
            nonlocal status, content_type, stored
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        content_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False) and status < 500:
                    # Stored before the answer's last byte leaves: a client that retries the
                    # moment it has the answer gets the replay, never "in progress". A store
                    # that fails here must not cost the answer: it is tried again after it.
                    try:
                        await store.finish(claim, status, content_type, b"".join(chunks))
                        stored = True
                    except Exception as exc:
                        log.warning("storing an idempotent answer failed", error=repr(exc))
            await send(message)

        try:
            await app(scope, receive_body, capture)
        except BaseException:
            await store.release(claim)  # (a no-op once the answer is stored)
            raise
        if status >= 500:
            await store.release(claim)
        elif not stored:
            await store.finish(claim, status, content_type, b"".join(chunks))

    return middleware

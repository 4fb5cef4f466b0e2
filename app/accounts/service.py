"""Account use cases: register, authenticate, look up, and change a user's roles or standing.

Every change to roles or standing bumps `users.auth_version` in the same UPDATE (which is also the
optimistic lock against a concurrent change) and, once committed, calls `notify(user_id)` so every
process drops its cached auth state (see app/auth.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Table, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app.accounts.errors import (
    Banned,
    BlankDisplayName,
    EmailTaken,
    EmailTooLong,
    InvalidCredentials,
    InvalidEmail,
    MemberRoleRequired,
    UserNotFound,
)
from app.accounts.models import DISPLAY_NAME_MAX_CHARS, EMAIL_MAX_CHARS, Role, User
from app.db import AsyncSession, driver_fetch, on_postgres
from app.errors import ServiceBusy
from app.text import clean_name, has_hidden_characters
from app.uow import UnitOfWork

#: Called with a user's id once a change to their roles or standing is committed.
AuthChanged = Callable[[UUID], Awaitable[None]]
#: More work for the same unit of work (an audit row, the decision that grants a role): it runs
#: after the change, before the commit, and fails the whole change if it raises.
AlsoDo = Callable[[AsyncSession, User], Awaitable[None]]
#: Concurrent changes to one user are rare; after this many lost races, give up (503).
CHANGE_ATTEMPTS = 5

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both answers take the same time.
_DUMMY_HASH = _hasher.hash("copool-timing-equaliser")


def _roles_column(roles: Iterable[Role]) -> str:
    ordered = [r for r in Role if r in set(roles) | {Role.MEMBER}]
    return ",".join(ordered)


async def register_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    display_name: str,
    roles: Iterable[Role],
    now: datetime,
) -> User:
    """Create an account with an argon2 hash; a taken email (any case) raises EmailTaken."""
    # Others see the name (on ratings and complaints): no bidi overrides, controls, zero widths.
    shown_name = clean_name(display_name, max_chars=DISPLAY_NAME_MAX_CHARS)
    if not shown_name:
        raise BlankDisplayName(
            "display_name has no visible characters",
            errors=[{"field": "display_name", "message": "no visible characters"}],
        )
    address = email.strip().lower()
    if has_hidden_characters(address):
        raise InvalidEmail(
            "the email address holds control or format characters (such as bidi overrides or "
            "zero-width spaces)",
            errors=[{"field": "email", "message": "control or format characters"}],
        )
    if len(address) > EMAIL_MAX_CHARS:
        raise EmailTooLong(
            f"the email address is {len(address)} characters once lower-cased; at most "
            f"{EMAIL_MAX_CHARS}",
            errors=[{"field": "email", "message": f"at most {EMAIL_MAX_CHARS} characters"}],
        )
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    user = User(
        email=address,
        password_hash=password_hash,
        display_name=shown_name,
        roles=_roles_column(roles),
        created_at=now,
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise EmailTaken(f"an account with email {user.email} already exists") from None
    return user


async def authenticate(session: AsyncSession, *, email: str, password: str) -> User:
    """Return the user whose email and password match, else raise InvalidCredentials."""
    user = (await session.exec(select(User).where(User.email == email.strip().lower()))).first()
    try:
        await asyncio.to_thread(
            _hasher.verify, user.password_hash if user else _DUMMY_HASH, password
        )
    except (VerificationError, InvalidHashError):
        raise InvalidCredentials("email or password is wrong") from None
    if user is None or user.deactivated_at is not None:
        raise InvalidCredentials("email or password is wrong")
    if user.banned_at is not None:
        raise Banned("this account is banned; contact support")
    return user


async def get_user(session: AsyncSession, user_id: UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.exec(select(User).where(User.email == email.strip().lower()))).first()


class AuthState(msgspec.Struct, frozen=True):
    """What authenticating a request needs to know about a user, small enough to cache."""

    roles: frozenset[Role]
    banned: bool
    deactivated: bool
    version: int


#: Put a limit on everything: at most this many users are read by one statement.
AUTH_STATES_MAX_USERS = 1_000
_PG_AUTH_STATES = (
    "SELECT id, roles, banned_at, deactivated_at, auth_version FROM users WHERE id = ANY ($1)"
)


async def load_auth_states(
    session: AsyncSession, user_ids: Sequence[UUID]
) -> dict[UUID, AuthState]:
    """The current roles and standing of each of these users that exists (at most
    AUTH_STATES_MAX_USERS of them), in one statement."""
    if len(user_ids) > AUTH_STATES_MAX_USERS:
        raise ValueError(f"at most {AUTH_STATES_MAX_USERS} users at a time")
    if not user_ids:
        return {}
    rows: Sequence[Any]
    if on_postgres(session):
        # The auth cache's reads (a request's user missing from it, or its refresh): straight
        # to the driver, on a pooled connection borrowed for this statement alone.
        rows = await driver_fetch(session, _PG_AUTH_STATES, list(user_ids))
    else:
        users: Table = User.__table__  # type: ignore[attr-defined]
        query = sa_select(
            users.c.id,
            users.c.roles,
            users.c.banned_at,
            users.c.deactivated_at,
            users.c.auth_version,
        ).where(users.c.id.in_(list(user_ids)))
        rows = (await session.execute(query)).all()
    return {row[0]: _auth_state(*row[1:]) for row in rows}


def _auth_state(roles: str, banned_at: Any, deactivated_at: Any, version: int) -> AuthState:
    return AuthState(
        roles=frozenset(Role(r) for r in roles.split(",") if r),
        banned=banned_at is not None,
        deactivated=deactivated_at is not None,
        version=version,
    )


async def _change_user(
    uow: UnitOfWork,
    *,
    user_id: UUID,
    change: Callable[[User], dict[str, Any] | None],
    notify: AuthChanged,
    also: AlsoDo | None = None,
) -> User:
    """Apply `change` (new column values, or None for nothing to do) as one versioned UPDATE.

    The UPDATE only matches the version that was read, so a concurrent change is never lost:
    the loser reads again and re-applies its change on top.
    """
    for _ in range(CHANGE_ATTEMPTS):
        async with uow:
            user = await uow.session.get(User, user_id)
            if user is None:
                raise UserNotFound(f"no user with id {user_id}")
            values = change(user)
            if values is None:
                if also is not None:
                    await also(uow.session, user)
                    await uow.commit()
                return user
            connection = await uow.session.connection()
            result = await connection.execute(
                update(User)
                .where(col(User.id) == user_id, col(User.auth_version) == user.auth_version)
                .values(**values, auth_version=user.auth_version + 1)
            )
            if result.rowcount != 1:
                continue  # someone else changed this user meanwhile: read again
            await uow.session.refresh(user)
            if also is not None:
                await also(uow.session, user)
            uow.after_commit(notify, user_id)
            await uow.commit()
            return user
    raise ServiceBusy("this user is being changed concurrently; retry shortly")


async def grant_role(
    uow: UnitOfWork,
    *,
    user_id: UUID,
    role: Role,
    notify: AuthChanged,
    also: AlsoDo | None = None,
) -> User:
    """Give the user `role` (a no-op if they have it); effective on their next request."""

    def change(user: User) -> dict[str, Any] | None:
        if role in user.role_list:
            return None
        return {"roles": _roles_column([*user.role_list, role])}

    return await _change_user(uow, user_id=user_id, change=change, notify=notify, also=also)


async def revoke_role(uow: UnitOfWork, *, user_id: UUID, role: Role, notify: AuthChanged) -> User:
    """Take `role` away (a no-op if they lack it); member cannot be revoked."""
    if role is Role.MEMBER:
        raise MemberRoleRequired("every account keeps the member role; ban or deactivate instead")

    def change(user: User) -> dict[str, Any] | None:
        if role not in user.role_list:
            return None
        return {"roles": _roles_column(r for r in user.role_list if r is not role)}

    return await _change_user(uow, user_id=user_id, change=change, notify=notify)


async def ban_user(
    uow: UnitOfWork,
    *,
    user_id: UUID,
    reason: str,
    now: datetime,
    notify: AuthChanged,
    also: AlsoDo | None = None,
) -> User:
    """Ban the user: from their next request on, everything they try is refused (403 banned)."""
    reason = reason.strip()[:500]

    def change(user: User) -> dict[str, Any] | None:
        if user.banned_at is not None and user.ban_reason == reason:
            return None
        return {"banned_at": user.banned_at or now, "ban_reason": reason}

    return await _change_user(uow, user_id=user_id, change=change, notify=notify, also=also)


async def unban_user(
    uow: UnitOfWork, *, user_id: UUID, notify: AuthChanged, also: AlsoDo | None = None
) -> User:
    """Lift a ban (a no-op if there is none); effective on the user's next request."""

    def change(user: User) -> dict[str, Any] | None:
        if user.banned_at is None:
            return None
        return {"banned_at": None, "ban_reason": None}

    return await _change_user(uow, user_id=user_id, change=change, notify=notify, also=also)


async def deactivate_user(
    uow: UnitOfWork, *, user_id: UUID, now: datetime, notify: AuthChanged
) -> User:
    """Close the account: its tokens stop authenticating (401) and it can no longer log in."""

    def change(user: User) -> dict[str, Any] | None:
        if user.deactivated_at is not None:
            return None
        return {"deactivated_at": now}

    return await _change_user(uow, user_id=user_id, change=change, notify=notify)

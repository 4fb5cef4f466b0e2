"""Account use cases: register, authenticate, look up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from app.accounts.errors import EmailTaken, InvalidCredentials
from app.accounts.models import Role, User
from app.db import AsyncSession

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
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    user = User(
        email=email.strip().lower(),
        password_hash=password_hash,
        display_name=display_name.strip(),
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
    if user is None:
        raise InvalidCredentials("email or password is wrong")
    return user


async def get_user(session: AsyncSession, user_id: UUID) -> User | None:
    return await session.get(User, user_id)

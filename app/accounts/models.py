"""Account tables."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid4

from sqlalchemy import Column, Integer, String, text
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class Role(StrEnum):
    MEMBER = "member"
    ORGANIZER = "organizer"
    DRIVER = "driver"
    ADMIN = "admin"


#: A display name's length at most (the column and the API's schema).
DISPLAY_NAME_MAX_CHARS = 80
#: RFC 5321's limit on an address, as stored (lower-cased).
EMAIL_MAX_CHARS = 254


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    #: Stored lower-cased; uniqueness is the database's job.
    email: str = Field(sa_column=Column(String(EMAIL_MAX_CHARS), nullable=False, unique=True))
    password_hash: str = Field(max_length=255)
    display_name: str = Field(max_length=DISPLAY_NAME_MAX_CHARS)
    #: Comma-separated Role values, always including "member".
    roles: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    #: Set while the user is banned: every request is refused with 403 ``banned``.
    banned_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    ban_reason: str | None = Field(default=None, max_length=500)
    #: Set once the account is closed: its tokens no longer authenticate (401).
    deactivated_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    #: Bumped by every change to roles or standing, so cached auth state can be recognised stale.
    auth_version: int = Field(
        default=0, sa_column=Column(Integer(), nullable=False, server_default=text("0"))
    )

    @property
    def role_list(self) -> list[Role]:
        return [Role(r) for r in self.roles.split(",") if r]

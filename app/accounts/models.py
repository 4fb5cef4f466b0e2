"""Account tables."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid4

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class Role(StrEnum):
    MEMBER = "member"
    ORGANIZER = "organizer"
    DRIVER = "driver"
    ADMIN = "admin"


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    #: Stored lower-cased; uniqueness is the database's job.
    email: str = Field(sa_column=Column(String(254), nullable=False, unique=True))
    password_hash: str = Field(max_length=255)
    display_name: str = Field(max_length=80)
    #: Comma-separated Role values, always including "member".
    roles: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))

    @property
    def role_list(self) -> list[Role]:
        return [Role(r) for r in self.roles.split(",") if r]

"""What the accounts API reads and writes."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from app.accounts.models import DISPLAY_NAME_MAX_CHARS, EMAIL_MAX_CHARS

# No field may hold a NUL character: PostgreSQL text cannot store one (asyncpg refuses it).
Email = Annotated[
    str,
    Meta(
        min_length=3, max_length=EMAIL_MAX_CHARS, pattern=r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$"
    ),
]
Password = Annotated[
    str, Meta(min_length=8, max_length=256, pattern=r"^[^\x00]*$", description="no NUL character")
]
DisplayName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=DISPLAY_NAME_MAX_CHARS,
        pattern=r"^[^\x00]*[^\x00\s][^\x00]*$",
        description="not blank, no NUL character",
    ),
]
#: `driver` comes with a verified insurance policy (trust), `admin` from an operator.
SelfServiceRole = Literal["member", "organizer"]


class RegisterIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    display_name: DisplayName
    #: Roles a user may take on themselves; `admin` is only granted by an operator.
    roles: Annotated[list[SelfServiceRole], Meta(max_length=3)] = msgspec.field(
        default_factory=lambda: ["member"]
    )


class RegisterOut(msgspec.Struct):
    user_id: UUID
    token: str


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[str, Meta(min_length=1, max_length=EMAIL_MAX_CHARS, pattern=r"^[^\x00]*$")]
    password: Annotated[str, Meta(min_length=1, max_length=256, pattern=r"^[^\x00]*$")]


class TokenOut(msgspec.Struct):
    token: str
    token_type: str = "bearer"


class ReputationSummaryOut(msgspec.Struct):
    """The caller's reputation (GET /v1/users/{id}/reputation has the full public view)."""

    score: float
    rating_average: float | None
    rating_count: int
    completed_count: int
    badges: list[str]


class WalletSummaryOut(msgspec.Struct):
    currency: str
    available_minor: int
    held_minor: int
    balance_minor: int


class MeOut(msgspec.Struct):
    user_id: UUID
    email: str
    display_name: str
    roles: list[str]
    reputation: ReputationSummaryOut
    wallet: WalletSummaryOut

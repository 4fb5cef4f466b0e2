"""Cursor pages: `?limit=` (default 20, max 100) and an opaque `?cursor=`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Generic, TypeVar

import msgspec
from litestar.exceptions import ValidationException
from litestar.params import QueryParameter

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
#: A position is a row id: a signed 64-bit integer (PostgreSQL bigint).
MIN_POSITION, MAX_POSITION = -(2**63), 2**63 - 1
#: `?limit=` as a handler parameter: `limit: LimitQuery = DEFAULT_LIMIT`.
LimitQuery = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="page size, 1 to 100")]
CursorQuery = Annotated[
    str | None, QueryParameter(max_length=200, description="from `next_cursor`")
]


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{position}".encode()).decode().rstrip("=")


def next_cursor(rows: Sequence[T], limit: int, position: Callable[[T], int | None]) -> str | None:
    """The cursor after the last of `limit` rows shown, when the query (asked for limit + 1
    rows) found more."""
    last = position(rows[limit - 1]) if len(rows) > limit else None
    return encode_cursor(last) if last is not None else None


def decode_cursor(cursor: str | None) -> int | None:
    """The position a cursor points after; a malformed cursor is a 422."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, position = text.partition(":")
        if version != "v1":
            raise ValueError(version)
        value = int(position)
        # Only the very text encode_cursor makes: int() also reads "+1", " 1", "1_0", other
        # scripts' digits, and base64 decoding skips stray characters.
        if not MIN_POSITION <= value <= MAX_POSITION or encode_cursor(value) != cursor:
            raise ValueError(position)
        return value
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationException(
            "cursor is not one this API gave out", extra=[{"key": "cursor", "message": "invalid"}]
        ) from None

"""Query strings: every parameter of this API takes one value."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from litestar import Request
from litestar.exceptions import ValidationException


async def reject_repeated_parameters(request: Request[Any, Any, Any]) -> None:
    """A parameter given more than once is a 422 (Litestar would take one of the values and
    drop the others without a word: `?status=open&status=failed` listed the failed pools).

    A coroutine function, as every hook here: Litestar runs a plain function hook in a thread
    pool, a hop through a thread and back for every request."""
    raw: bytes = request.scope.get("query_string", b"")
    if not raw:
        return
    seen: set[str] = set()
    for key, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if key in seen:
            raise ValidationException(
                f"query parameter {key!r} is given more than once; it takes one value",
                extra=[{"key": key, "message": "given more than once"}],
            )
        seen.add(key)

"""How a JSON request body is read: only as JSON, strictly, against the handler's declared type.

Litestar decodes a body into plain values and then converts them with msgspec's lax rules, which
turn `"100"` or `1.0` into the integer 100. Money must not be guessed at, so copool decodes the
body once with `strict=True` into the type the handler declares for `data`, and maps every way a
body can be malformed (not UTF-8, nested too deep, not JSON, not the schema) to a 422 problem and
a body that is not declared as JSON to a 415 problem. Wired in as the app's `request_class`.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException, ValidationException

_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def is_json_media_type(media_type: str) -> bool:
    """`application/json` (any parameters, any case) or a `+json` type such as problem+json."""
    media_type = media_type.strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


@functools.cache
def _decoder(target: Any) -> msgspec.json.Decoder[Any]:
    try:
        return msgspec.json.Decoder(type=target, strict=True)
    except TypeError:
        # A type msgspec cannot decode natively: check the JSON only, Litestar converts the rest.
        return msgspec.json.Decoder()


def _invalid(field: str, message: str) -> ValidationException:
    return ValidationException(
        f"invalid request body: {message}", extra=[{"key": field, "message": message}]
    )


def _field_error(exc: msgspec.ValidationError) -> ValidationException:
    message = str(exc)
    at = _PATH.search(message)
    if at and at.group(1):
        return _invalid(at.group(1), message[: at.start()])
    missing = _MISSING_FIELD.search(message)
    return _invalid(missing.group(1) if missing else "body", message)


def decode_body(raw: bytes, target: Any) -> Any:
    """Decode `raw` strictly into `target`; ValidationException (422) for anything malformed."""
    try:
        return _decoder(target).decode(raw)
    except msgspec.ValidationError as exc:
        raise _field_error(exc) from None
    except UnicodeDecodeError:
        raise _invalid("body", "the body is not valid UTF-8") from None
    except RecursionError:
        raise _invalid("body", "the body nests too deeply") from None
    except msgspec.DecodeError as exc:
        raise _invalid("body", f"the body is not valid JSON ({exc})") from None


class StrictJSONRequest(Request[Any, Any, Any]):
    """A Request whose `json()` refuses non-JSON content types and decodes strictly."""

    async def json(self) -> Any:
        media_type, _ = self.content_type
        if not is_json_media_type(media_type):
            raise HTTPException(
                status_code=415,
                detail="send the body as JSON with Content-Type: application/json",
            )
        data = self.route_handler.parsed_fn_signature.parameters.get("data")
        target = data.annotation if data is not None else Any
        return decode_body(await self.body() or b"null", target)

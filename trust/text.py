"""Text users write (comments, complaints, reasons, policy fields), made safe to store and show."""

from __future__ import annotations

from app.text import clean_text, shows_something
from trust.errors import BlankText

__all__ = ["clean_text", "optional_text", "required_text"]


def required_text(text: str, *, max_chars: int, field: str) -> str:
    """clean_text that must leave something: BlankText (422) otherwise."""
    cleaned = clean_text(text, max_chars=max_chars)
    if not shows_something(cleaned):
        raise BlankText(f"{field} has no visible characters")
    return cleaned


def optional_text(text: str | None, *, max_chars: int) -> str | None:
    """clean_text, or None where nothing visible is left."""
    cleaned = clean_text(text or "", max_chars=max_chars)
    return cleaned if shows_something(cleaned) else None

"""Text users write (comments, complaints, reasons, policy fields), made safe to store and show."""

from __future__ import annotations

import unicodedata

from trust.errors import BlankText

#: Kept although they are format characters: they join emoji sequences and lay out text.
KEPT = frozenset({"\n", "\t", "\u200d"})


def clean_text(text: str, *, max_chars: int) -> str:
    """NFC, without control or format characters (bidi overrides, zero-width spaces, BOMs,
    separators), trimmed and bounded."""
    text = unicodedata.normalize("NFC", text)
    kept = "".join(
        ch
        for ch in text
        if ch in KEPT or unicodedata.category(ch) not in {"Cc", "Cf", "Zl", "Zp", "Cs", "Co"}
    )
    return kept.strip()[:max_chars]


def required_text(text: str, *, max_chars: int, field: str) -> str:
    """clean_text that must leave something: BlankText (422) otherwise."""
    cleaned = clean_text(text, max_chars=max_chars)
    if not cleaned:
        raise BlankText(f"{field} has no visible characters")
    return cleaned

"""Text users write that others are shown (names, comments, complaints), made safe to store and
show: a kernel module, pure."""

from __future__ import annotations

import unicodedata

#: Kept although they are format characters: they join emoji sequences and lay out text.
KEPT = frozenset({"\n", "\t", "\u200d"})
_DROPPED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})


def clean_text(text: str, *, max_chars: int) -> str:
    """NFC, without control or format characters (bidi overrides, zero-width spaces, BOMs,
    separators), trimmed and bounded."""
    text = unicodedata.normalize("NFC", text)
    kept = "".join(ch for ch in text if ch in KEPT or unicodedata.category(ch) not in _DROPPED)
    return kept.strip()[:max_chars]

"""Text users write (comments, complaints, policy fields), made safe to store and show."""

from __future__ import annotations

import re
import unicodedata

# Control and format characters (bidi overrides, zero-width joiners...) except newline and tab.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str, *, max_chars: int) -> str:
    """Text as stored and shown: NFC, no control or bidi characters, trimmed, bounded."""
    text = _UNPRINTABLE.sub("", unicodedata.normalize("NFC", text)).strip()
    return text[:max_chars]

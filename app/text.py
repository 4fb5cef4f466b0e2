"""Text users write that others are shown (names, comments, complaints), made safe to store and
show: a kernel module, pure."""

from __future__ import annotations

import unicodedata

#: Kept although they are format characters: they join emoji sequences and lay out text.
KEPT = frozenset({"\n", "\t", "\u200d"})
_DROPPED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})
#: Letters by category that show nothing (Hangul fillers, the Braille blank).
_FILLERS = frozenset({"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"})


def clean_text(text: str, *, max_chars: int) -> str:
    """NFC, without control or format characters (bidi overrides, zero-width spaces, BOMs,
    separators), trimmed and bounded."""
    text = unicodedata.normalize("NFC", text)
    kept = "".join(ch for ch in text if ch in KEPT or unicodedata.category(ch) not in _DROPPED)
    return kept.strip()[:max_chars]


def has_hidden_characters(text: str) -> bool:
    """Whether the text holds a control or format character (a joiner included), which
    clean_text would drop (but for line breaks, tabs and joiners)."""
    return any(unicodedata.category(ch) in _DROPPED for ch in text)


def clean_name(text: str, *, max_chars: int) -> str:
    """clean_text for a name shown on one line: every run of white space one space; empty
    unless something visible is left (shows_something)."""
    name = " ".join(clean_text(text, max_chars=max_chars * 4).split())[:max_chars]
    return name if shows_something(name) else ""


def shows_something(text: str) -> bool:
    """Whether the text has a visible character: a letter, number, symbol or punctuation that
    is not a filler (marks only decorate one: alone, joiners and variation selectors among
    them, they show nothing)."""
    return any(unicodedata.category(ch)[0] in "LNSP" and ch not in _FILLERS for ch in text)

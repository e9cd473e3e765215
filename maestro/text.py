"""Text that came from outside, made safe to show: bounded, and inert in a terminal."""

from __future__ import annotations

import unicodedata

__all__ = ["escape_unprintable", "has_surrogate", "is_printable_char", "truncate"]


def is_printable_char(ch: str) -> bool:
    """False for what a terminal or a reader could be fooled by.

    That is control characters (C0, DEL, C1: escape sequences start with them), format
    characters (bidi overrides, zero-width joiners), lone surrogates, private-use and
    unassigned code points, and the Unicode line and paragraph separators.
    """
    if " " <= ch <= "~":
        return True
    return unicodedata.category(ch)[0] != "C" and ch not in "\u2028\u2029"


def escape_unprintable(text: str, *, keep: str = "") -> str:
    """Replaces every unprintable character (except those in `keep`) with `\\uXXXX`."""
    # str.isprintable() is stricter than is_printable_char, and runs in C.
    if text.isprintable() or all(ch in keep or is_printable_char(ch) for ch in text):
        return text
    return "".join(ch if ch in keep or is_printable_char(ch) else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def has_surrogate(text: str) -> bool:
    """Whether the string holds a lone surrogate, which no UTF-8 encoder accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with `…` when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"

"""Label text is untrusted input: one normaliser for every tag value, name and id.

OSM tag values and vector attributes go into captions, QA pairs, ``.txt`` members, Parquet and
the terminal. ``clean_label`` makes them plain one-line text: Unicode NFC, control characters
(newlines, ``\\r``, ANSI escape sequences) and invisible format characters (the bidi overrides
U+202A-U+202E and U+2066-U+2069, zero-width joiners, BOMs) removed, runs of whitespace collapsed
to one space, the ends stripped, and the length capped at ``MAX_LABEL_CHARS`` (OSM's own limit
on a tag value is 255 characters). Markup-like text (``<b>``, ``&amp;``) is kept as written:
it is legitimate in names, and whatever renders HTML escapes it there.

``printable`` is the terminal-side twin: it shows control characters as escapes instead of
sending them to the terminal.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

MAX_LABEL_CHARS = 256
_ELLIPSIS = "…"
# ESC [ ... final byte (CSI), ESC ] ... BEL/ST (OSC), and two-byte ESC sequences.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")
_SPACE = re.compile(r"\s+")


def _visible(ch: str) -> bool:
    """False for control (Cc), format (Cf: bidi overrides, zero-width), surrogate, private-use
    and unassigned characters; whitespace is handled by the caller."""
    return unicodedata.category(ch)[0] != "C"


def clean_label(value: object, max_chars: int = MAX_LABEL_CHARS) -> str:
    """One tag value, name or id as safe one-line text (see the module docstring)."""
    text = value if isinstance(value, str) else str(value)
    if (
        len(text) <= max_chars
        and text.isprintable()
        and (text.isascii() or unicodedata.is_normalized("NFC", text))
        and "  " not in text
        and text == text.strip()
    ):
        return text  # the common case: already clean, no copy
    text = _ANSI.sub("", unicodedata.normalize("NFC", text))
    text = "".join(ch if ch.isspace() or _visible(ch) else "" for ch in text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + _ELLIPSIS
    return text


MAX_KEY_CHARS = 64


def clean_tags(tags: Mapping[Any, Any]) -> dict[str, str]:
    """A tag mapping with every key and value cleaned; a tag whose key or value is empty
    after cleaning is dropped (it said nothing visible). A dict that is clean already is
    returned as it is (the common case costs a check per string, no copy)."""
    out: dict[str, str] = {}
    same = isinstance(tags, dict)
    for k, v in tags.items():
        key, value = clean_label(k, MAX_KEY_CHARS), clean_label(v)
        same = same and key is k and value is v and bool(key) and bool(value)
        if key and value:
            out[key] = value
    return tags if same else out  # type: ignore[return-value]


def clean_labels(values: list[Any], max_chars: int = MAX_LABEL_CHARS) -> list[str]:
    """``clean_label`` of each value. A batch that is clean already (the common case: a shard's
    ids) is checked in one pass over its joined text and returned as it is."""
    if _all_clean(values, max_chars):
        return values
    return [clean_label(v, max_chars) for v in values]


def clean_tags_batch(batch: list[Any]) -> list[dict[str, str]]:
    """``clean_tags`` of each mapping; a batch of dicts whose keys and values are all clean and
    non-empty is checked in two passes and returned as it is."""
    if all(type(t) is dict for t in batch):
        keys = [k for t in batch for k in t]
        values = [v for t in batch for v in t.values()]
        clean = all(keys) and all(values) and _all_clean(keys, MAX_KEY_CHARS)
        if clean and _all_clean(values, MAX_LABEL_CHARS):
            return batch
    return [clean_tags(t) for t in batch]


def _all_clean(values: list[Any], max_chars: int) -> bool:
    """Whether ``clean_label`` would return every value unchanged, from their text joined by
    "|": printable (so the only whitespace is " "), NFC, no double space, no space next to a
    separator or at either end (no item with a space at its ends; a "|" inside an item at
    worst sends the batch the slow way), none too long."""
    if not values:
        return True
    if not all(type(v) is str for v in values) or max(map(len, values)) > max_chars:
        return False
    text = "|".join(values)
    return (
        text.isprintable()
        and (text.isascii() or unicodedata.is_normalized("NFC", text))
        and "  " not in text
        and "| " not in text
        and " |" not in text
        and text[:1] != " "
        and text[-1:] != " "
    )


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}


def printable(text: str) -> str:
    """``text`` with every non-printable character shown as an escape (``\\n``, ``\\x1b``,
    ``\\u202e``), for printing untrusted values to a terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def plain_error(exc: BaseException, max_chars: int = 2000) -> str:
    """``Type: message`` of an exception as plain text, for stats files and the manifest: no
    ANSI colour codes, no traceback frames (interpreter paths). A Ray task error is reported
    as the task's own exception (its ``cause``)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = _ANSI.sub("", str(exc)).splitlines()
    frames = re.compile(r'^\s*(File ".*", line \d+|Traceback \(most recent call last\))')
    kept = [ln.rstrip() for ln in lines if ln.strip() and not frames.match(ln)]
    text = " | ".join(kept)
    text = "".join(ch for ch in text if ch.isprintable())
    return f"{type(exc).__name__}: {text}"[:max_chars] if text else type(exc).__name__

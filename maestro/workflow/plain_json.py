"""A fast path for workflows sent as JSON: the same data the YAML path builds, read in C.

JSON is YAML, and API clients (and the bench) often send workflows as JSON. The YAML
path builds plain data one node at a time in Python so that every problem can name
its field and line; for a 1,000-step document that is about 35 ms, where `json.loads`
takes half a millisecond. This module reads a document with `json.loads` only when
the YAML path would build exactly the same data, and answers None otherwise, so the
YAML path reads it and reports its problems as it always did. The fast path never
reports an error of its own and never accepts what the YAML path would refuse, except
for PyYAML's YAML 1.1 quirks about JSON whitespace (tabs), which YAML 1.2 allows.

Where YAML 1.1 (libyaml) and JSON differ, the document goes to the YAML path:
- a number YAML reads as a string (`1e3`, `1.5e3`: YAML 1.1 floats need a dot, and an
  exponent needs a sign), or `NaN`/`Infinity` (not JSON; not floats in YAML);
- a repeated key (JSON keeps the last; the YAML path refuses it);
- a surrogate escape (`\\ud83d\\ude00`: JSON joins the pair, PyYAML does not);
- a character YAML does not take raw (DEL, C1 controls, U+FFFE/U+FFFF) or reads as a
  line break and folds inside strings (NEL, LS, PS);
- a key whose `:` is on another line or far from the key's start, or a long key (YAML
  reads a key only on one line, within 1,024 characters);
- anything over the YAML path's limits: depth, number of values, key and string
  lengths (the YAML path says which and where).
"""

from __future__ import annotations

import json
import re
from typing import Any

from maestro.workflow.limits import (
    MAX_ECHO_CHARS,
    MAX_INSTRUCTIONS_CHARS,
    MAX_STRING_CHARS,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
)

__all__ = ["load_plain_json"]

# A YAML 1.1 float as JSON can write it: digits, a dot, digits, and an exponent only
# with its sign (PyYAML's resolver; JSON forbids the other forms it allows).
_YAML_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+(?:[eE][-+][0-9]+)?")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# YAML's printable characters, less NEL, LS and PS (line breaks to YAML, folded inside
# quoted strings; plain characters to JSON).
_NOT_PLAIN_CHARACTER = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
# YAML reads a key only with its `:` on the same line and within 1,024 characters of
# the key's opening quote. Over-approximated, which only sends a few more documents
# the YAML way: a key's `:` on another line or 60 blanks or more away is found here,
# and a key of more than _LONGEST_KEY characters by _within_limits. A key of 159
# characters is at most 956 written (each one a 6-character escape such as \u0041,
# with its quotes), so with a gap under 60 its colon stays within 1,024.
_KEY_YAML_WOULD_NOT_READ = re.compile(r'"[ \t\r\n]*[\r\n][ \t\r\n]*:|"[ \t\r\n]{60,}:')
_LONGEST_KEY = min(MAX_ECHO_CHARS, 159)


class _NotPlain(Exception):
    """The document is JSON that the YAML path would read differently."""


def load_plain_json(text: str) -> dict[str, Any] | None:
    """The document's data when it is a JSON object the YAML path reads identically.

    Args:
        text: The workflow text, already checked for size and lone surrogates.

    Returns:
        The data (dicts, lists, strings, ints, floats, booleans, None), or None when
        the YAML path must read the document instead.
    """
    if (
        not text.lstrip().startswith("{")
        or _SURROGATE_ESCAPE.search(text)
        or _NOT_PLAIN_CHARACTER.search(text)
        or _KEY_YAML_WOULD_NOT_READ.search(text)
    ):
        return None
    try:
        data = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_float=_yaml_float,
            parse_constant=_not_yaml,
        )
    except (ValueError, RecursionError, _NotPlain):
        # Not JSON, or JSON read differently: ValueError covers JSONDecodeError and
        # integers longer than Python converts.
        return None
    if not isinstance(data, dict) or not _within_limits(data):
        return None
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _NotPlain
    return result


def _yaml_float(literal: str) -> float:
    if not _YAML_FLOAT.fullmatch(literal):
        raise _NotPlain
    return float(literal)


def _not_yaml(literal: str) -> float:
    raise _NotPlain


def _within_limits(root: dict[str, Any]) -> bool:
    """The YAML path's limits, counted as it counts them: every key, scalar and
    collection is a value; nesting counts collections; instructions may be longer than
    other strings."""
    values = 0
    pending: list[tuple[Any, int, int]] = [(root, 1, MAX_STRING_CHARS)]
    while pending:
        value, depth, string_limit = pending.pop()
        values += 1
        if isinstance(value, str):
            if len(value) > string_limit:
                return False
        elif isinstance(value, dict):
            if depth > MAX_YAML_DEPTH:
                return False
            values += len(value)
            for key, child in value.items():
                if len(key) > _LONGEST_KEY:
                    return False
                # As the YAML path: `instructions` of a mapping inside the document.
                nested_instructions = key == "instructions" and depth > 1
                limit = MAX_INSTRUCTIONS_CHARS if nested_instructions else MAX_STRING_CHARS
                pending.append((child, depth + 1, limit))
        elif isinstance(value, list):
            if depth > MAX_YAML_DEPTH:
                return False
            pending.extend((child, depth + 1, MAX_STRING_CHARS) for child in value)
        if values > MAX_YAML_NODES:
            return False
    return True

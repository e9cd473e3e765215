"""The transcript of an attempt: one JSON object per line, returned with the result.

It records each model call (turn, stop reason, usage), the model's text, and each tool
call with its outcome; file contents are recorded by size and sha256, not repeated.
It is capped, so a runaway loop cannot make the result message huge.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

MAX_TRANSCRIPT_BYTES = 512 * 1024
_MAX_TEXT = 4000


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + f"... [{len(text)} chars]"


def summarize_input(args: dict[str, Any]) -> dict[str, Any]:
    """A tool input with file contents replaced by their size and digest."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key in ("content", "old_text", "new_text") and isinstance(value, str):
            data = value.encode()
            out[key] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()[:16]}
        else:
            out[key] = value
    return out


class Transcript:
    """Collects the attempt's events as JSON lines, up to a byte cap."""

    def __init__(self, cap: int = MAX_TRANSCRIPT_BYTES) -> None:
        self._lines: list[bytes] = []
        self._size = 0
        self._cap = cap
        self._dropped = 0

    def add(self, event: str, **fields: Any) -> None:
        """Records one event."""
        record = {"event": event, **fields}
        if "text" in record and isinstance(record["text"], str):
            record["text"] = _clip(record["text"])
        line = json.dumps(record, sort_keys=True, default=str).encode() + b"\n"
        if self._size + len(line) > self._cap:
            self._dropped += 1
            return
        self._lines.append(line)
        self._size += len(line)

    def to_bytes(self) -> bytes:
        """The transcript so far (with a last line saying what the cap dropped)."""
        tail = b""
        if self._dropped:
            tail = json.dumps({"event": "truncated", "dropped_events": self._dropped}).encode()
            tail += b"\n"
        return b"".join(self._lines) + tail

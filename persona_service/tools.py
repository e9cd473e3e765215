"""The agent loop's workspace and its file tools.

The workspace starts as the run's artifact tree (text files) as the step starts; the
step's result is what it changed. Paths from the model are normalised and confined
(maestro.paths), files are size-capped, and a path another step owns is refused
unless the workflow declares it shared. One file per tool call: a large file is
written in parts (write_file, then write_file with append), so no answer needs to
hold a whole package and max_tokens is no wall.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from anthropic.types import ToolParam

from maestro.paths import BadPath, check_file_size, normalize_artifact_path
from persona_service.contract import owner_of
from persona_service.models import TextFile

SUBMIT = "submit"
RUN_CHECKS = "run_checks"
READ_LIMIT_BYTES = 64 * 1024
LIST_LIMIT = 400


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call did: the tool_result text, whether it failed, a progress note."""

    text: str
    is_error: bool = False
    note: str = ""


def _kib(size: int) -> str:
    return f"{size / 1024:.1f} KiB"


class Workspace:
    """The files a step works on: the run's tree as it started, plus the step's edits.

    Args:
        files: Path -> text as the step starts.
        owned: Path -> the other step that wrote it (writes are refused).
        shared: Paths (or "dir/" prefixes) any step may write.
        unseen: Paths of the run that are not in `files` (named, not readable).
    """

    def __init__(
        self,
        files: Mapping[str, str],
        *,
        owned: Mapping[str, str] | None = None,
        shared: Iterable[str] = (),
        unseen: Iterable[str] = (),
    ) -> None:
        self._start = dict(files)
        self._files = dict(files)
        self._owned = dict(owned or {})
        self._shared = tuple(shared)
        self._unseen = tuple(sorted(set(unseen) - set(files)))

    @property
    def files(self) -> Mapping[str, str]:
        """The current files."""
        return self._files

    def changed(self) -> tuple[TextFile, ...]:
        """The files the step wrote or changed, in path order."""
        return tuple(
            TextFile(path=path, content=text)
            for path, text in sorted(self._files.items())
            if self._start.get(path) != text
        )

    def _path(self, raw: Any) -> str:
        if not isinstance(raw, str):
            raise BadPath("path must be a string")
        return normalize_artifact_path(raw)

    def list_files(self, prefix: str = "") -> ToolOutcome:
        """Lists the files under `prefix`, with their sizes."""
        rows = [
            f"{path} ({len(text.encode())} bytes)"
            for path, text in sorted(self._files.items())
            if path.startswith(prefix)
        ]
        unseen = [p for p in self._unseen if p.startswith(prefix)]
        lines = rows[:LIST_LIMIT]
        if len(rows) > LIST_LIMIT:
            lines.append(f"... and {len(rows) - LIST_LIMIT} more; list a narrower prefix")
        if unseen:
            lines.append("In the run but not readable here: " + ", ".join(unseen))
        text = "\n".join(lines) or f"no files under {prefix!r}"
        return ToolOutcome(text, note=f"list_files {prefix or '.'}: {len(rows)} files")

    def read(self, raw_path: Any, offset: Any = 0) -> ToolOutcome:
        """Reads a file, from byte `offset`, at most READ_LIMIT_BYTES at a time."""
        try:
            path = self._path(raw_path)
        except BadPath as err:
            return ToolOutcome(f"error: {err}", is_error=True)
        if path not in self._files:
            hint = (
                " (it exists in the run but was not sent to this worker)"
                if path in self._unseen
                else ""
            )
            return ToolOutcome(f"error: no file {path!r}{hint}", is_error=True)
        data = self._files[path].encode()
        start = offset if isinstance(offset, int) and offset >= 0 else 0
        chunk = data[start : start + READ_LIMIT_BYTES].decode("utf-8", "ignore")
        end = start + READ_LIMIT_BYTES
        more = (
            f"\n[... {len(data) - end} more bytes; read again with offset={end}]"
            if end < len(data)
            else ""
        )
        return ToolOutcome(chunk + more, note=f"read_file {path} ({_kib(len(data))})")

    def write(self, raw_path: Any, content: Any, append: Any = False) -> ToolOutcome:
        """Writes (or appends to) one file."""
        try:
            path = self._path(raw_path)
            if not isinstance(content, str):
                raise BadPath("content must be a string")
            owner = owner_of(path, self._owned, self._shared)
            if owner is not None:
                return ToolOutcome(
                    f"error: {path!r} belongs to step {owner!r} and is not shared; write your "
                    "own paths (you may read it)",
                    is_error=True,
                    note=f"write_file {path} refused: owned by step {owner}",
                )
            text = self._files.get(path, "") + content if append is True else content
            check_file_size(path, len(text.encode()))
        except BadPath as err:
            return ToolOutcome(f"error: {err}", is_error=True)
        self._files[path] = text
        verb = "appended to" if append is True else "wrote"
        size = _kib(len(text.encode()))
        return ToolOutcome(
            f"{verb} {path} ({len(text.encode())} bytes)", note=f"write_file {path} ({size})"
        )

    def edit(self, raw_path: Any, old: Any, new: Any) -> ToolOutcome:
        """Replaces the one occurrence of `old` in a file with `new`."""
        try:
            path = self._path(raw_path)
            if not isinstance(old, str) or not isinstance(new, str) or not old:
                raise BadPath("old_text (not empty) and new_text must be strings")
            owner = owner_of(path, self._owned, self._shared)
            if owner is not None:
                return ToolOutcome(
                    f"error: {path!r} belongs to step {owner!r} and is not shared",
                    is_error=True,
                    note=f"edit_file {path} refused: owned by step {owner}",
                )
            if path not in self._files:
                return ToolOutcome(f"error: no file {path!r}; use write_file", is_error=True)
            text = self._files[path]
            count = text.count(old)
            if count != 1:
                return ToolOutcome(
                    f"error: old_text occurs {count} times in {path}; it must occur exactly "
                    "once (include more surrounding lines)",
                    is_error=True,
                )
            updated = text.replace(old, new, 1)
            check_file_size(path, len(updated.encode()))
        except BadPath as err:
            return ToolOutcome(f"error: {err}", is_error=True)
        self._files[path] = updated
        return ToolOutcome(
            f"edited {path}", note=f"edit_file {path} ({_kib(len(updated.encode()))})"
        )


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_STRING = {"type": "string"}


def tool_definitions(*, with_checks: bool) -> list[ToolParam]:
    """The loop's tools; run_checks only when a sandbox is configured."""
    tools: list[ToolParam] = [
        {
            "name": "list_files",
            "description": "List the workspace's files (path and size) under a prefix.",
            "input_schema": _schema(
                {"prefix": {"type": "string", "description": "e.g. 'app/'; '' for all"}}, []
            ),
        },
        {
            "name": "read_file",
            "description": (
                f"Read a workspace file, up to {READ_LIMIT_BYTES} bytes from `offset`."
            ),
            "input_schema": _schema(
                {"path": _STRING, "offset": {"type": "integer", "minimum": 0}}, ["path"]
            ),
        },
        {
            "name": "write_file",
            "description": (
                "Write one file with its complete content (creates or replaces it). For a "
                "large file, write the first part, then add the rest with append=true."
            ),
            "input_schema": _schema(
                {
                    "path": {"type": "string", "description": "relative, '/' separators"},
                    "content": _STRING,
                    "append": {"type": "boolean", "description": "add to the end instead"},
                },
                ["path", "content"],
            ),
        },
        {
            "name": "edit_file",
            "description": (
                "Replace the one occurrence of old_text in a file with new_text; include "
                "enough surrounding lines to make old_text unique."
            ),
            "input_schema": _schema(
                {"path": _STRING, "old_text": _STRING, "new_text": _STRING},
                ["path", "old_text", "new_text"],
            ),
        },
    ]
    if with_checks:
        tools.append(
            {
                "name": RUN_CHECKS,
                "description": (
                    "Run the project's checks (pytest, ruff, compile) on the current "
                    "workspace in a sandbox and get the report."
                ),
                "input_schema": _schema({}, []),
            }
        )
    tools.append(
        {
            "name": SUBMIT,
            "description": (
                "Finish the step once every deliverable is written: a few sentences on "
                "what you built and decided."
            ),
            "input_schema": _schema({"summary": _STRING}, ["summary"]),
        }
    )
    return tools

"""Artifact paths: relative, normalised, confined to the run's tree.

Paths come from model output, so they are untrusted: anything absolute, anything that
climbs out with `..`, and anything odd is rejected with the reason.
"""

from __future__ import annotations

import posixpath

MAX_PATH_LENGTH = 255
MAX_FILE_BYTES = 1024 * 1024


class BadPath(ValueError):
    """A path that cannot be an artifact path; the message says why."""


def normalize_artifact_path(raw: str) -> str:
    """Returns the normalised form of a relative artifact path.

    Raises:
        BadPath: the path is empty, absolute, escapes with `..`, uses backslashes or
            control characters, or is too long.
    """
    if not raw or not raw.strip():
        raise BadPath("path is empty")
    if len(raw) > MAX_PATH_LENGTH:
        raise BadPath(f"path is longer than {MAX_PATH_LENGTH} characters")
    if "\\" in raw:
        raise BadPath(f"path {raw!r} uses a backslash; use '/'")
    if any(ord(ch) < 32 for ch in raw):
        raise BadPath(f"path {raw!r} contains a control character")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise BadPath(f"path {raw!r} is absolute; artifact paths are relative")
    if ".." in raw.split("/"):
        raise BadPath(f"path {raw!r} contains '..'")
    normalised = posixpath.normpath(raw)
    if normalised in ("", "."):
        raise BadPath(f"path {raw!r} names no file")
    return normalised


def check_file_size(path: str, size: int) -> None:
    """Raises BadPath when a file is larger than an artifact may be."""
    if size > MAX_FILE_BYTES:
        raise BadPath(f"file {path!r} is {size} bytes; the limit is {MAX_FILE_BYTES}")

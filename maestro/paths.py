"""Artifact paths: relative, normalised, confined to the run's tree, harmless on disk.

Paths come from model output, so they are untrusted. The worker, the scheduler, the
gateway and the command line all check them here, with the same rules: nothing
absolute, nothing that climbs out with `..`; no component that Git or a shell would
act on (`.git`, `.gitmodules`, ... anything starting `.git`), no device name Windows
reserves (`CON`, `NUL`, `COM1`...), no control, bidi or invisible formatting
character, and nothing that is not valid Unicode. The reason is always given.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Iterable

MAX_PATH_LENGTH = 255
MAX_FILE_BYTES = 1024 * 1024

# Windows device names, with or without an extension (`nul.txt` is the device too).
_DEVICE = re.compile(r"(con|prn|aux|nul|clock\$|conin\$|conout\$|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?")


class BadPath(ValueError):
    """A path that cannot be an artifact path; the message says why."""


def _shown(raw: str) -> str:
    # repr escapes control, bidi and surrogate characters; the path is at most 255.
    text = repr(raw)
    return text if len(text) <= 120 else text[:120] + "…"


def _check_characters(raw: str) -> None:
    for ch in raw:
        category = unicodedata.category(ch)
        if category == "Cs":
            raise BadPath(f"path {_shown(raw)} is not valid Unicode (a lone surrogate)")
        if category == "Cc":
            raise BadPath(f"path {_shown(raw)} contains a control character")
        if category in ("Cf", "Zl", "Zp") or category.startswith("C"):
            # Bidi overrides and isolates (U+202A-202E, U+2066-2069), zero-width
            # characters: they make a name look like another one.
            raise BadPath(
                f"path {_shown(raw)} contains an invisible formatting character (U+{ord(ch):04X})"
            )


def _check_component(raw: str, component: str) -> None:
    folded = component.casefold()
    if folded.startswith(".git"):
        raise BadPath(
            f"path {_shown(raw)} has a component starting with '.git' ({component!r}); "
            "Git would act on it"
        )
    if _DEVICE.fullmatch(folded.rstrip(" .")):
        raise BadPath(f"path {_shown(raw)} uses {component!r}, a reserved device name")
    if component != component.rstrip(" ."):
        raise BadPath(f"path {_shown(raw)} has a component ending in a dot or a space")


def normalize_artifact_path(raw: str) -> str:
    """Returns the normalised form of a relative artifact path.

    Raises:
        BadPath: the path is empty, absolute, escapes with `..`, uses backslashes,
            control, bidi or other invisible characters, has a `.git*` component or
            a reserved device name, or is too long.
    """
    if not raw or not raw.strip():
        raise BadPath("path is empty")
    if len(raw) > MAX_PATH_LENGTH:
        raise BadPath(f"path is longer than {MAX_PATH_LENGTH} characters")
    _check_characters(raw)
    if "\\" in raw:
        raise BadPath(f"path {_shown(raw)} uses a backslash; use '/'")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise BadPath(f"path {_shown(raw)} is absolute; artifact paths are relative")
    if ".." in raw.split("/"):
        raise BadPath(f"path {_shown(raw)} contains '..'")
    normalised = posixpath.normpath(raw)
    if normalised in ("", "."):
        raise BadPath(f"path {_shown(raw)} names no file")
    for component in normalised.split("/"):
        _check_component(raw, component)
    return normalised


def check_file_size(path: str, size: int) -> None:
    """Raises BadPath when a file is larger than an artifact may be."""
    if size > MAX_FILE_BYTES:
        raise BadPath(f"file {path!r} is {size} bytes; the limit is {MAX_FILE_BYTES}")


def is_shared(path: str, shared: Iterable[str]) -> bool:
    """True when `path` is declared shared: exactly, or under a shared "dir/"."""
    return any(
        path == entry or (entry.endswith("/") and path.startswith(entry)) for entry in shared
    )

"""Input checks made before anything starts: every problem found at once, exit code 2.

Each check returns the problem in words (naming the flag or variable and the fix), or
None; the command collects them all and refuses with the whole list, before it
creates a data directory or starts a process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from maestro.cli.options import API_KEY_ENV

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)$")


class InputProblems(Exception):
    """The command's input has problems; nothing was started."""

    def __init__(self, problems: Sequence[str], what: str = "the command") -> None:
        self.problems = list(problems)
        self.what = what
        super().__init__("; ".join(self.problems))


def gateway_problem(value: str, source: str) -> str | None:
    """What is wrong with a gateway address, or None for a good `HOST:PORT`.

    Args:
        value: The address as given.
        source: Where it came from (`--gateway` or `MAESTRO_GATEWAY`), for the message.
    """
    text = value.strip()
    if _SCHEME.match(text):
        bare = _SCHEME.sub("", text).rstrip("/")
        return f"{source} {value!r}: give HOST:PORT without a scheme (such as {bare!r})"
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        return f"{source} {value!r}: give HOST:PORT (such as 127.0.0.1:50051)"
    if not _HOST.match(host):
        return f"{source} {value!r}: {host!r} is not a host name or address"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{source} {value!r}: the port must be a number from 1 to 65535"
    return None


def out_problem(out: Path) -> str | None:
    """What is wrong with `--out DIR`, or None (a directory, or a path to create one at)."""
    if out.exists() and not out.is_dir():
        return f"--out {str(out)!r}: is a file; give a directory (created if missing)"
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"--out {str(out)!r}: {str(parent)!r} is a file, not a directory"
            break
    return None


def provider_problem(provider: str | None, env: Mapping[str, str], *, local: bool) -> str | None:
    """`--provider anthropic` for a local stack needs the API key on this machine (a
    remote gateway's workers have their own)."""
    if local and provider == "anthropic" and not env.get(API_KEY_ENV, "").strip():
        return f"--provider anthropic: {API_KEY_ENV} is not set; set it, or use --provider offline"
    return None


def requirement_problem(requirement: str) -> str | None:
    """An empty requirement is refused."""
    return None if requirement.strip() else "--requirement must not be empty"

"""Resource names of the public API (AIP-122): parsed once, with precise errors."""

from __future__ import annotations

import re

from maestro.core.errors import InvalidArgument
from maestro.paths import BadPath, normalize_artifact_path

_RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def run_name(run_id: str) -> str:
    return f"runs/{run_id}"


def parse_run_name(name: str, field: str = "name") -> str:
    """Returns the run id of `runs/{run}`."""
    prefix, sep, run_id = name.partition("/")
    if prefix != "runs" or not sep or not _RUN_ID.match(run_id):
        raise InvalidArgument(field, f"{name!r} is not a run name; expected runs/{{run}}")
    return run_id


def parse_artifact_name(name: str) -> tuple[str, str]:
    """Returns (run id, path) of `runs/{run}/artifacts/{path}`."""
    parts = name.split("/", 3)
    if len(parts) != 4 or parts[0] != "runs" or parts[2] != "artifacts":
        raise InvalidArgument(
            "name", f"{name!r} is not an artifact name; expected runs/{{run}}/artifacts/{{path}}"
        )
    run_id = parse_run_name(f"runs/{parts[1]}")
    try:
        path = normalize_artifact_path(parts[3])
    except BadPath as err:
        raise InvalidArgument("name", str(err)) from None
    return run_id, path

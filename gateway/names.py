"""Resource names of the public API (AIP-122): parsed once, strictly, with precise errors.

A run id is exactly 16 lowercase hex digits (what the scheduler makes); nothing else
is a run name, so no odd byte (a newline, a second slash) ever reaches the store.
"""

from __future__ import annotations

import re

from maestro.core.errors import InvalidArgument, NotFound, Resource
from maestro.paths import BadPath, normalize_artifact_path
from maestro.workflow.limits import shown

RUN_ID_PATTERN = re.compile(r"[0-9a-f]{16}")
RUN_TYPE = "maestro.api.gateway.v1.Run"
ARTIFACT_TYPE = "maestro.api.gateway.v1.Artifact"
# A run name, `/artifacts/`, and the longest artifact path, with room to spare.
MAX_NAME_CHARS = 512


def run_name(run_id: str) -> str:
    return f"runs/{run_id}"


def run_not_found(run_id: str) -> NotFound:
    """The NOT_FOUND for a run that does not exist or belongs to someone else."""
    name = run_name(run_id)
    return NotFound(f"run {name} does not exist", resource=Resource(RUN_TYPE, name))


def parse_run_name(name: str, field: str = "name") -> str:
    """Returns the run id of `runs/{run}`.

    Raises:
        InvalidArgument: anything else, with the field and the expected form.
    """
    prefix, sep, run_id = name.partition("/")
    if prefix != "runs" or not sep or not RUN_ID_PATTERN.fullmatch(run_id):
        raise InvalidArgument(
            field,
            f"{shown(name)} is not a run name; expected runs/{{run}} with a run id of "
            "16 lowercase hex digits",
        )
    return run_id


def parse_artifact_name(name: str) -> tuple[str, str]:
    """Returns (run id, path) of `runs/{run}/artifacts/{path}`.

    Raises:
        InvalidArgument: anything else, or a path that is not a normalised artifact
            path (absolute, `..`, control characters, ...).
    """
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument("name", f"is {len(name)} characters long; at most {MAX_NAME_CHARS}")
    parts = name.split("/", 3)
    if len(parts) != 4 or parts[0] != "runs" or parts[2] != "artifacts":
        raise InvalidArgument(
            "name",
            f"{shown(name)} is not an artifact name; expected runs/{{run}}/artifacts/{{path}}",
        )
    try:
        path = normalize_artifact_path(parts[3])
    except BadPath as err:
        raise InvalidArgument("name", str(err)) from None
    if path != parts[3]:
        raise InvalidArgument(
            "name", f"the path in {shown(name)} is not normalised; use {shown(path)}"
        )
    return parse_run_name(f"runs/{parts[1]}", field="name"), path


def parse_step_name(name: str) -> tuple[str, str]:
    """Returns (run id, step id) of `runs/{run}/steps/{step}`.

    Raises:
        InvalidArgument: anything else.
    """
    from maestro.workflow.spec import STEP_ID_PATTERN

    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument("name", f"is {len(name)} characters long; at most {MAX_NAME_CHARS}")
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "runs" or parts[2] != "steps":
        raise InvalidArgument(
            "name", f"{shown(name)} is not a step name; expected runs/{{run}}/steps/{{step}}"
        )
    if not STEP_ID_PATTERN.fullmatch(parts[3]):
        raise InvalidArgument("name", f"{shown(parts[3])} is not a valid step id")
    return parse_run_name(f"runs/{parts[1]}", field="name"), parts[3]

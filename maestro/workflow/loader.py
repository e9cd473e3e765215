"""Loads workflows from YAML, built-in or user-written, and reports every problem at once.

A workflow author should be able to fix a file in one pass, so validation collects
all problems (YAML, fields, personas, graph) and raises one ``WorkflowError``.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from maestro.workflow.spec import (
    GraphError,
    RetryPolicy,
    StepSpec,
    WorkflowError,
    WorkflowProblem,
    WorkflowSpec,
    check_graph,
    did_you_mean,
    step_labels,
)

__all__ = [
    "builtin_workflow",
    "builtin_workflow_names",
    "builtin_workflow_yaml",
    "load_workflow",
    "parse_workflow_yaml",
]

# Workflows arrive over the API too. These bound the work one request can cause: a
# few aliases can expand a small YAML text into billions of nodes ("billion laughs").
MAX_YAML_CHARS = 1_000_000
MAX_YAML_NODES = 100_000

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "tuple_type": "a list",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
}


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        # Merge keys (<<) may legitimately be overridden, so only literal keys count.
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_workflow_yaml(text: str, *, source: str = "<workflow>") -> WorkflowSpec:
    """Parses and validates a workflow written in YAML.

    Args:
        text: The YAML document.
        source: Where the text came from (a path, a built-in name); used in messages
            about the document as a whole.

    Returns:
        The validated workflow.

    Raises:
        WorkflowError: With every problem found: YAML syntax (with line and column),
            unknown or missing fields, wrong types, bad durations, unknown personas,
            duplicate ids, unknown dependencies and cycles.
    """
    if len(text) > MAX_YAML_CHARS:
        raise _whole(f"{source} is too large ({len(text)} characters, at most {MAX_YAML_CHARS})")
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader: builds no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _whole(f"invalid YAML in {source}{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise _whole(f"invalid YAML in {source}: {exc}") from None
    except RecursionError:
        raise _whole(f"invalid YAML in {source}: nested too deeply") from None
    if not isinstance(data, dict):
        raise _whole(
            f"{source} must be a mapping with 'name' and 'steps' at the top level, "
            f"got {_kind(data)}"
        )
    if _node_count(data, {}, set()) > MAX_YAML_NODES:
        raise _whole(
            f"{source} is too large: with aliases expanded it has more than "
            f"{MAX_YAML_NODES} values, or an alias refers to itself"
        )
    return _validate(data)


def load_workflow(ref: str) -> WorkflowSpec:
    """Loads a built-in workflow by name, or else a workflow file by path.

    Only for trusted callers such as the command line: a remote caller must not be
    able to make a service read arbitrary files; use ``builtin_workflow`` there.

    Args:
        ref: A built-in name such as ``sdlc-parallel`` or a path to a YAML file.

    Returns:
        The validated workflow.

    Raises:
        WorkflowError: If there is no such built-in or file (field ``workflow``,
            listing the built-in names), or the workflow is invalid.
    """
    if ref in builtin_workflow_names():
        return builtin_workflow(ref)
    path = Path(ref)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _whole(
            f"no built-in workflow or file named {ref!r} "
            f"(built-in workflows: {', '.join(builtin_workflow_names())})"
        ) from None
    except IsADirectoryError:
        raise _whole(f"{ref!r} is a directory, not a workflow file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _whole(f"cannot read workflow file {ref!r}: {exc}") from None
    return parse_workflow_yaml(text, source=str(path))


def builtin_workflow_names() -> list[str]:
    """Returns the names of the workflows shipped with Maestro, sorted."""
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in _builtin_dir().iterdir()
        if entry.name.endswith(".yaml")
    )


def builtin_workflow_yaml(name: str) -> str:
    """Returns the YAML text of a built-in workflow.

    Raises:
        WorkflowError: If there is no built-in workflow of that name.
    """
    names = builtin_workflow_names()
    # Checked against the listing, so a name can never reach outside the directory.
    if name not in names:
        hint = did_you_mean(name, names)
        raise _whole(
            f"unknown built-in workflow {name!r}{hint} (built-in workflows: {', '.join(names)})"
        )
    return _builtin_dir().joinpath(f"{name}.yaml").read_text(encoding="utf-8")


@functools.cache
def builtin_workflow(name: str) -> WorkflowSpec:
    """Returns a built-in workflow, parsed and validated (cached: specs are frozen).

    Raises:
        WorkflowError: If there is no built-in workflow of that name.
    """
    return parse_workflow_yaml(builtin_workflow_yaml(name), source=f"built-in workflow {name}")


def _builtin_dir() -> Traversable:
    return resources.files("maestro.workflow").joinpath("builtin")


def _validate(data: dict[Any, Any]) -> WorkflowSpec:
    raw_steps = data.get("steps")
    raw_steps = raw_steps if isinstance(raw_steps, list) else []
    nodes = [
        (i, step["id"], _str_items(step.get("depends_on")))
        for i, step in enumerate(raw_steps)
        if isinstance(step, dict) and isinstance(step.get("id"), str)
    ]
    try:
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        labels = step_labels((i, step_id) for i, step_id, _ in nodes)
        problems = [_problem(error, labels) for error in exc.errors()]
        # The graph is checked on the raw steps: the model checks it only once every
        # field is valid, and the author should not need two passes.
        problems.extend(check_graph(nodes))
        raise WorkflowError(dict.fromkeys(p for p in problems if p is not None)) from None


def _problem(error: ErrorDetails, labels: dict[int, str]) -> WorkflowProblem | None:
    loc = error["loc"]
    kind = error["type"]
    ctx = error.get("ctx", {})
    value = error["input"]
    if kind == "value_error" and isinstance(ctx.get("error"), GraphError):
        return None  # found again by check_graph on the raw steps
    field = _path(loc, labels)
    last = str(loc[-1]) if loc else ""
    if kind == "missing":
        reason = f"missing required field {last!r}"
    elif kind == "extra_forbidden":
        allowed = list(_model_at(loc[:-1]).model_fields)
        hint = did_you_mean(last, allowed) or f" (allowed: {', '.join(allowed)})"
        reason = f"unknown field {last!r}{hint}"
    elif kind in ("value_error", "assertion_error"):
        reason = str(ctx.get("error", error["msg"]))
    elif loc == ("steps",) and kind == "too_short":
        if value:
            return None  # pydantic counts only the valid steps; theirs are reported
        reason = "workflow has no steps"
    elif kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
        reason = "must not be empty"
    elif kind == "greater_than_equal":
        reason = f"must be at least {ctx['ge']}, got {value!r}"
    elif kind == "less_than_equal":
        reason = f"must be at most {ctx['le']}, got {value!r}"
    elif kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if last == "steps":
            expected = "a list of steps"
        elif last == "depends_on":
            expected = "a list of step ids, e.g. [architecture]"
        reason = f"expected {expected}, got {_kind(value)}"
    else:
        reason = error["msg"]
    return WorkflowProblem(field=field, reason=reason)


def _path(loc: tuple[int | str, ...], labels: dict[int, str]) -> str:
    if not loc:
        return "workflow"
    parts: list[str] = []
    rest = loc
    if loc[0] == "steps" and len(loc) > 1 and isinstance(loc[1], int):
        parts.append(labels.get(loc[1], f"steps[{loc[1]}]"))
        rest = loc[2:]
    for item in rest:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else item)
    return "".join(parts)


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel]:
    if loc and loc[-1] == "retry":
        return RetryPolicy
    if len(loc) == 2 and loc[0] == "steps":
        return StepSpec
    return WorkflowSpec


def _str_items(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _kind(value: object) -> str:
    """Names a value's type the way YAML authors know it."""
    if value is None:
        return "null"
    for kind, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a mapping"),
    ):
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"  # e.g. YAML turns 2024-01-01 into a date


def _node_count(value: object, memo: dict[int, int], active: set[int]) -> int:
    # Counts values as validation would visit them, with aliases expanded; memoised
    # by identity, so the count itself stays linear in the document's size.
    if not isinstance(value, list | dict):
        return 1
    key = id(value)
    if key in active:
        return MAX_YAML_NODES + 1  # a recursive alias: infinitely large
    if key not in memo:
        active.add(key)
        children = value.values() if isinstance(value, dict) else value
        memo[key] = 1 + sum(_node_count(child, memo, active) for child in children)
        active.discard(key)
    return memo[key]


def _whole(reason: str) -> WorkflowError:
    return WorkflowError([WorkflowProblem(field="workflow", reason=reason)])

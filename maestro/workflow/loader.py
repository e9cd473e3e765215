"""Loads workflows from YAML, built-in or user-written, and reports every problem at once.

A workflow author should be able to fix a file in one pass, so validation collects
all problems (YAML, fields, personas, graph) and raises one ``WorkflowError``.

Workflows also arrive over the public API, so the loader is safe on hostile input:
the work one document can cause is bounded (``maestro.workflow.limits``), and every
failure of the YAML library or of pydantic becomes a WorkflowError naming the field.
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

from maestro.text import escape_unprintable, has_surrogate, truncate
from maestro.workflow.limits import (
    MAX_DEPENDENCIES,
    MAX_ECHO_CHARS,
    MAX_INSTRUCTIONS_CHARS,
    MAX_PROBLEMS_LISTED,
    MAX_STEPS,
    MAX_STRING_CHARS,
    MAX_WORKFLOW_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    shown,
)
from maestro.workflow.plain_json import load_plain_json
from maestro.workflow.spec import (
    GraphError,
    HintBudget,
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
    "load_yaml_document",
    "parse_workflow_yaml",
]

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

# libyaml's parser when the PyYAML build has it (ten times faster); the same rules.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """The safe loader: builds no arbitrary objects."""


def parse_workflow_yaml(text: str, *, source: str = "<workflow>") -> WorkflowSpec:
    """Parses and validates a workflow written in YAML.

    Bounded work whatever the input (see ``maestro.workflow.limits``), so it may run
    on hostile text; code on an event loop calls ``parse_workflow_off_loop``.

    Args:
        text: The YAML document.
        source: Where the text came from (a path, a built-in name); used in messages
            about the document as a whole.

    Returns:
        The validated workflow.

    Raises:
        WorkflowError: With the problems found (at most MAX_PROBLEMS_LISTED listed):
            YAML syntax (with line and column), values YAML cannot construct, keys
            that are not strings, lone surrogates, limits exceeded, unknown or
            missing fields, wrong types, bad durations, unknown personas, duplicate
            ids, unknown dependencies and cycles.
    """
    source = truncate(escape_unprintable(source), MAX_ECHO_CHARS)
    data = load_yaml_document(text, source)
    if not isinstance(data, dict):
        raise _whole(
            f"{source} must be a mapping with 'name' and 'steps' at the top level, "
            f"got {_kind(data)}"
        )
    shape = _check_shape(data)
    if shape:
        raise WorkflowError(shape)
    return _validate(data)


def load_yaml_document(text: str, source: str) -> Any:
    """Turns YAML text into plain data: dicts with string keys, lists and scalars.

    Raises:
        WorkflowError: too large or too deep, invalid YAML, a value YAML cannot
            construct (with the field where it is), a key that is not a string or is
            repeated, or a string holding a lone surrogate.
    """
    if has_surrogate(text):
        raise _whole(f"{source} contains a lone surrogate, which is not valid Unicode")
    size = len(text.encode("utf-8"))
    if size > MAX_WORKFLOW_BYTES:
        raise _whole(f"{source} is too large ({size} bytes; at most {MAX_WORKFLOW_BYTES})")
    plain = load_plain_json(text)
    if plain is not None:
        return plain
    return _load_yaml(text, source)


def _load_yaml(text: str, source: str) -> Any:
    """The YAML path of `load_yaml_document` (the JSON fast path must agree with it)."""
    try:
        _prescan(text, source)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            builder = _Builder(loader, node)
            data = builder.build(node, "")
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise _whole(_marked(source, exc)) from None
    except yaml.YAMLError as exc:
        raise _whole(f"invalid YAML in {source}: {shown(str(exc))}") from None
    except RecursionError:
        raise _whole(f"invalid YAML in {source}: nested too deeply") from None
    if builder.problems:
        raise WorkflowError(builder.problems)
    # Only YAML has aliases: the JSON fast path counted every value as it read them.
    if isinstance(data, dict) and _node_count(data, {}, set()) > MAX_YAML_NODES:
        raise _whole(
            f"{source} is too large: with aliases expanded it has more than "
            f"{MAX_YAML_NODES} values, or an alias refers to itself"
        )
    return data


def _marked(source: str, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = escape_unprintable(truncate(str(exc.problem or exc.context), MAX_ECHO_CHARS))
    return f"invalid YAML in {source}{where}: {what}"


_COLLECTION_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_COLLECTION_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_VALUE = (yaml.ScalarEvent, yaml.AliasEvent, *_COLLECTION_START)


def _prescan(text: str, source: str) -> None:
    """Refuses documents too deep or with too many values before building anything.

    The event parser is iterative and cannot overflow a stack however deep the
    nesting; composing nodes is recursive (in C, with libyaml), so the depth must be
    known to be small first. libyaml crashes the process on a deep enough document.
    """
    depth = values = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, _VALUE):
            values += 1
            if values > MAX_YAML_NODES:
                raise _whole(f"{source} is too large: more than {MAX_YAML_NODES} values")
        if isinstance(event, _COLLECTION_START):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise _whole(f"{source} nests more than {MAX_YAML_DEPTH} levels deep (line {line})")
        elif isinstance(event, _COLLECTION_END):
            depth -= 1


_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Builder:
    """Builds plain data from composed YAML nodes, one value at a time.

    Each scalar is constructed by the safe loader on its own, so a value it cannot
    construct (`!!int abc`, a 13th month, 5,000 digits) becomes a problem at its own
    field. Keys must be plain strings and appear once; tags other than the standard
    ones, and strings holding lone surrogates, are problems too. Aliases share one
    value, as in PyYAML.
    """

    def __init__(self, loader: _Loader, root: yaml.Node) -> None:
        self._loader = loader
        self._built: dict[int, Any] = {}
        self.problems: list[WorkflowProblem] = []
        # How many of each mapping's pairs were written in it (not merged in with
        # `<<`), counted before flattening rewrites them: only those may not repeat.
        self._explicit: dict[int, int] = {}
        pending, seen = [root], set()
        while pending:
            node = pending.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                self._explicit[id(node)] = sum(1 for k, _ in node.value if k.tag != _MERGE_TAG)
                pending.extend(item for pair in node.value for item in pair)
            elif isinstance(node, yaml.SequenceNode):
                pending.extend(node.value)

    def _problem(self, path: str, node: yaml.Node, reason: str) -> None:
        mark = node.start_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        self.problems.append(WorkflowProblem(field=path or "workflow", reason=reason + where))

    def build(self, node: yaml.Node, path: str) -> Any:
        key = id(node)
        if key in self._built:
            return self._built[key]
        if isinstance(node, yaml.SequenceNode):
            return self._sequence(node, path)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        value = self._scalar(node, path)
        self._built[key] = value
        return value

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        try:
            value = self._loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self._problem(path, node, _cannot(node, str(exc.problem)))
            return None
        except Exception as exc:  # what constructors raise: ValueError, KeyError, ...
            self._problem(path, node, _cannot(node, _exception_text(exc)))
            return None
        if isinstance(value, str):
            limit = MAX_INSTRUCTIONS_CHARS if path.endswith(".instructions") else MAX_STRING_CHARS
            if has_surrogate(value):
                self._problem(path, node, "contains a lone surrogate, which is not valid Unicode")
                return None
            if len(value) > limit:
                self._problem(path, node, f"is {len(value)} characters long; at most {limit}")
                return None
        return value

    def _sequence(self, node: yaml.SequenceNode, path: str) -> list[Any]:
        items: list[Any] = []
        # Stored before the items are built, so an alias to an enclosing list (a
        # recursive document) finds it instead of recursing; the count refuses it.
        self._built[id(node)] = items
        if node.tag != _SEQ_TAG:
            self._problem(path, node, f"the tag {shown(node.tag)} cannot mark a list")
            return items
        items.extend(self.build(item, f"{path}[{i}]") for i, item in enumerate(node.value))
        return items

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        self._built[id(node)] = result
        if node.tag != _MAP_TAG:
            self._problem(path, node, f"the tag {shown(node.tag)} cannot mark a mapping")
            return result
        explicit = self._explicit.get(id(node), len(node.value))
        try:
            # Resolves `<<` merge keys into plain pairs, merged ones first (PyYAML's rules).
            self._loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self._problem(path, node, escape_unprintable(truncate(str(exc.problem), 200)))
            return result
        first_explicit = len(node.value) - explicit
        written: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = self._key(key_node, path)
            if key is None:
                continue
            if index >= first_explicit:
                if key in written:
                    # Written twice: YAML would silently keep the last one.
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {shown(key)}",
                        key_node.start_mark,
                    )
                written.add(key)
            child = f"{path}.{key}" if path else key
            result[key] = self.build(value_node, truncate(child, 2 * MAX_ECHO_CHARS))
        return result

    def _key(self, node: yaml.Node, path: str) -> str | None:
        where = path or "workflow"
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR_TAG:
            self._problem(
                where, node, f"keys must be plain strings; found {_node_kind(node)} as a key"
            )
            return None
        value = str(node.value)
        if has_surrogate(value):
            self._problem(where, node, "a key contains a lone surrogate")
            return None
        if len(value) > MAX_ECHO_CHARS:
            self._problem(where, node, f"a key is {len(value)} characters long: {shown(value)}")
            return None
        return value


def _tag_name(tag: str) -> str:
    return tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag


def _cannot(node: yaml.Node, reason: str) -> str:
    return (
        f"cannot read {shown(node.value)} as {shown(_tag_name(node.tag))}: "
        f"{escape_unprintable(truncate(reason, MAX_ECHO_CHARS))}; quote it to make it a string"
    )


def _exception_text(exc: Exception) -> str:
    try:
        text = str(exc)
    except Exception:  # a __str__ that fails on its own input
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return f"{shown(node.value)} (tagged {shown(_tag_name(node.tag))})"


def _check_shape(data: dict[str, Any]) -> list[WorkflowProblem]:
    """Counts pydantic would check only after validating everything they count."""
    steps = data.get("steps")
    if not isinstance(steps, list):
        return []
    if len(steps) > MAX_STEPS:
        return [
            WorkflowProblem(field="steps", reason=f"has {len(steps)} steps; at most {MAX_STEPS}")
        ]
    problems = []
    for i, step in enumerate(steps):
        deps = step.get("depends_on") if isinstance(step, dict) else None
        if isinstance(deps, list) and len(deps) > MAX_DEPENDENCIES:
            problems.append(
                WorkflowProblem(
                    field=f"steps[{i}].depends_on",
                    reason=f"lists {len(deps)} steps; at most {MAX_DEPENDENCIES}",
                )
            )
    return problems


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
            f"no built-in workflow or file named {shown(ref)} "
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
            f"unknown built-in workflow {shown(name)}{hint} "
            f"(built-in workflows: {', '.join(names)})"
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
        hints = HintBudget()
        errors = exc.errors(include_url=False)
        graph = [
            error["ctx"]["error"]
            for error in errors
            if isinstance(error.get("ctx", {}).get("error"), GraphError)
        ]
        # Only the problems that can be listed are described; the rest are counted.
        described = 2 * MAX_PROBLEMS_LISTED
        problems = [_problem(error, labels, hints) for error in errors[:described]]
        unlisted = max(0, len(errors) - described - len(graph))
        # The model checks the graph only once every field is valid; otherwise it is
        # checked on the raw steps, so the author does not need two passes.
        problems.extend(graph[0].problems if graph else check_graph(nodes, hints))
        raise WorkflowError(
            dict.fromkeys(p for p in problems if p is not None), unlisted=unlisted
        ) from None


def _problem(
    error: ErrorDetails, labels: dict[int, str], hints: HintBudget
) -> WorkflowProblem | None:
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
        hint = hints.did_you_mean(last, allowed) or f" (allowed: {', '.join(allowed)})"
        reason = f"unknown field {shown(last)}{hint}"
    elif kind in ("value_error", "assertion_error"):
        reason = truncate(str(ctx.get("error", error["msg"])), 4 * MAX_ECHO_CHARS)
    elif loc == ("steps",) and kind == "too_short":
        if value:
            return None  # pydantic counts only the valid steps; theirs are reported
        reason = "workflow has no steps"
    elif kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
        reason = "must not be empty"
    elif kind == "greater_than_equal":
        reason = f"must be at least {ctx['ge']}, got {shown(value)}"
    elif kind == "less_than_equal":
        reason = f"must be at most {ctx['le']}, got {shown(value)}"
    elif kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if last == "steps":
            expected = "a list of steps"
        elif last == "depends_on":
            expected = "a list of step ids, e.g. [architecture]"
        reason = f"expected {expected}, got {_kind(value)}"
    else:
        reason = truncate(escape_unprintable(error["msg"]), 2 * MAX_ECHO_CHARS)
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

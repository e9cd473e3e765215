"""The workflow spec: steps, the personas that run them, and how they depend on each other.

The models check everything that can be checked without running anything, so a
``WorkflowSpec`` that exists is a valid DAG of known personas. ``loader`` turns YAML
into a spec and pydantic's errors into precise ``WorkflowProblem``s.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    field_validator,
    model_validator,
)

from maestro.core.errors import InvalidArgument
from maestro.paths import BadPath, normalize_artifact_path
from maestro.personas import PERSONAS
from maestro.sandbox.gate import Threshold
from maestro.sandbox.models import CheckName
from maestro.text import is_printable_char
from maestro.workflow.durations import format_duration, parse_duration
from maestro.workflow.fallback import MAX_FALLBACKS, Fallbacks
from maestro.workflow.gate_spec import (
    ReworkPolicy,
    check_approval_fields,
    check_gate_fields,
    check_rework,
    check_thresholds,
)
from maestro.workflow.limits import (
    MAX_BACKOFF,
    MAX_BUDGET_TOKENS,
    MAX_BUDGET_USD,
    MAX_DEPENDENCIES,
    MAX_DESCRIPTION_CHARS,
    MAX_ECHO_CHARS,
    MAX_HINT_CHOICES,
    MAX_HINT_WORD_CHARS,
    MAX_HINTS,
    MAX_INSTRUCTIONS_CHARS,
    MAX_NAME_CHARS,
    MAX_PROBLEMS_LISTED,
    MAX_SHARED_PATHS,
    MAX_STEP_DEADLINE,
    MAX_STEP_ID_CHARS,
    MAX_STEP_TIMEOUT,
    MAX_STEPS,
    shown,
)
from maestro.workflow.step_kind import StepKind

STEP_ID_PATTERN = re.compile(rf"[a-z][a-z0-9_-]{{0,{MAX_STEP_ID_CHARS - 1}}}")
# Kinds the architecture names but the scheduler cannot run yet; they get their own
# message so nobody mistakes them for typos.
_PLANNED_KINDS: tuple[str, ...] = ()


def _at_most(limit: timedelta) -> Callable[[timedelta], timedelta]:
    def check(value: timedelta) -> timedelta:
        if value > limit:
            raise ValueError(
                f"{format_duration(value)} is too long; the longest allowed is "
                f"{format_duration(limit)}"
            )
        return value

    return check


def _shared_path(value: str) -> str:
    """A relative artifact path, or a directory of them written with a trailing "/"."""
    directory = value.endswith("/")
    try:
        path = normalize_artifact_path(value.rstrip("/") if directory else value)
    except BadPath as err:
        raise ValueError(str(err)) from None
    return f"{path}/" if directory else path


SharedPath = Annotated[str, AfterValidator(_shared_path)]

# A step attempt's timeout becomes a gRPC deadline, so it must stay far from overflow.
Timeout = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_at_most(MAX_STEP_TIMEOUT))
]
# A whole step's deadline: every attempt and every wait, a week at most.
Deadline = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_at_most(MAX_STEP_DEADLINE))
]
Backoff = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_at_most(MAX_BACKOFF))
]


class WorkflowProblem(BaseModel):
    """One thing wrong with a workflow.

    Attributes:
        field: Where, e.g. ``steps[backend].timeout`` (or ``steps[2]...`` when the
            step has no usable id), or ``workflow`` for the document as a whole.
        reason: What is wrong, in words a workflow author can act on.
    """

    model_config = ConfigDict(frozen=True)

    field: str
    reason: str


class WorkflowError(InvalidArgument):
    """A workflow that cannot run; lists every problem found, not only the first.

    ``field`` and ``reason`` describe the first problem; ``message`` joins them as
    ``field: reason; field: reason``, which is what INVALID_ARGUMENT carries. At most
    ``MAX_PROBLEMS_LISTED`` problems are kept; ``more`` counts the rest.
    """

    reason_code = "WORKFLOW_INVALID"

    def __init__(self, problems: Iterable[WorkflowProblem], *, unlisted: int = 0) -> None:
        """Args: problems: what was found; unlisted: more problems not even described."""
        found = list(problems) or [WorkflowProblem(field="workflow", reason="invalid")]
        self.problems = tuple(found[:MAX_PROBLEMS_LISTED])
        self.more = len(found) - len(self.problems) + unlisted
        first, *rest = self.problems
        lines = [first.reason, *(_line(p) for p in rest)]
        if self.more:
            lines.append(f"and {self.more} more problems")
        super().__init__(first.field, "; ".join(lines))

    @property
    def violations(self) -> tuple[tuple[str, str], ...]:
        """(field, reason) of every problem kept (BadRequest details on the wire)."""
        return tuple((p.field, p.reason) for p in self.problems)


class GraphError(ValueError):
    """Graph problems, raised inside validation (pydantic wraps only ValueErrors)."""

    def __init__(self, problems: list[WorkflowProblem]) -> None:
        super().__init__("; ".join(_line(p) for p in problems))
        self.problems = tuple(problems)


class RetryPolicy(BaseModel):
    """How often a failed step is tried again, with exponential backoff.

    Attributes:
        max_attempts: Attempts in total, including the first (1 means no retry).
        initial_backoff: Wait before the second attempt.
        max_backoff: Upper bound on any wait.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: StrictInt = Field(default=2, ge=1, le=10)
    initial_backoff: Backoff = timedelta(seconds=1)
    max_backoff: Backoff = timedelta(seconds=30)

    @model_validator(mode="after")
    def _backoff_in_order(self) -> Self:
        if self.initial_backoff > self.max_backoff:
            raise ValueError(
                f"initial_backoff ({format_duration(self.initial_backoff)}) is longer "
                f"than max_backoff ({format_duration(self.max_backoff)})"
            )
        return self


EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
Effort = Literal["low", "medium", "high", "xhigh", "max"]


class Budget(BaseModel):
    """What a step may spend on model calls; omitted fields are unlimited.

    Attributes:
        usd: US dollars, priced by the worker's price table.
        tokens: Tokens of every kind (input, output, cache reads and writes).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Bounded so they fit the worker API's int64 and double fields.
    usd: float | None = Field(default=None, gt=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    tokens: StrictInt | None = Field(default=None, gt=0, le=MAX_BUDGET_TOKENS)

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, value: Any) -> Any:
        # Named here: the loader's unknown-field hint knows only steps and workflows.
        if isinstance(value, dict):
            unknown = sorted(str(k) for k in value if k not in ("usd", "tokens"))
            if unknown:
                raise ValueError(f"unknown budget field {shown(unknown[0])} (allowed: usd, tokens)")
            if not value:
                raise ValueError("a budget needs usd, tokens or both")
        return value


class StepSpec(BaseModel):
    """One step of a workflow.

    Attributes:
        id: Unique within the workflow; lowercase letters, digits, ``_`` and ``-``.
        persona: A name from ``maestro.personas.PERSONAS``.
        kind: What runs the step.
        depends_on: Ids of the steps that must succeed first.
        timeout: Per attempt, at most 24 hours; None means the workflow's
            ``default_timeout``.
        deadline: For the whole step (every attempt and every wait between them);
            None means the workflow's ``default_deadline``. Infrastructure faults are
            retried until it passes.
        retry: None means the workflow's ``retry``.
        instructions: Step-specific guidance passed to the persona.
        model: The Claude model; None means the workflow's ``model`` (then the
            worker's default). Any name is accepted: the API decides.
        effort: The effort level; None means the workflow's ``effort``.
        budget: What the step may spend over all its attempts (None: no limit of its
            own); the run's ``budget`` holds as well.
        fallback: Where the step goes when its model cannot serve it; None means the
            workflow's ``fallback`` (see ``maestro.workflow.fallback``).
        checks: A gate's checks (pytest, ruff, compile).
        thresholds: A gate's bounds, by metric name.
        coverage: Whether a gate's pytest measures coverage.
        on_fail: Rework when the gate fails or the reviewer asks for changes.
        prompt: An approval's question to the person deciding.
        on_timeout: What an approval's timeout decides.
        on_reject: Rework when a person rejects an approval step.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    # Required for persona steps; gates have none (see _gate_has_no_persona).
    persona: str
    kind: StepKind = StepKind.PERSONA
    depends_on: tuple[str, ...] = Field(default=(), max_length=MAX_DEPENDENCIES)
    timeout: Timeout | None = None
    deadline: Deadline | None = None
    retry: RetryPolicy | None = None
    instructions: str = Field(default="", max_length=MAX_INSTRUCTIONS_CHARS)
    model: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)
    effort: Effort | None = None
    budget: Budget | None = None
    # Model capacity (maestro/workflow/fallback.py).
    fallback: Fallbacks | None = Field(default=None, max_length=MAX_FALLBACKS)
    checks: tuple[CheckName, ...] = Field(default=(), max_length=len(CheckName))
    thresholds: Annotated[dict[str, Threshold], AfterValidator(check_thresholds)] = Field(
        default_factory=dict
    )
    coverage: bool = False
    on_fail: ReworkPolicy | None = None
    prompt: str = Field(default="", max_length=MAX_INSTRUCTIONS_CHARS)
    on_timeout: Literal["approve", "reject"] = "reject"
    on_reject: ReworkPolicy | None = None

    @model_validator(mode="before")
    @classmethod
    def _gate_has_no_persona(cls, data: Any) -> Any:
        no_persona = (StepKind.GATE, StepKind.APPROVAL)
        if isinstance(data, dict) and data.get("kind") in no_persona and "persona" not in data:
            return {**data, "persona": ""}
        return data

    @model_validator(mode="after")
    def _check_kind_fields(self) -> Self:
        if self.kind is StepKind.PERSONA and not self.persona:
            raise ValueError(f"step {shown(self.id)} needs a persona")
        check_gate_fields(self)
        check_approval_fields(self)
        return self

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not STEP_ID_PATTERN.fullmatch(value):
            raise ValueError(
                f"{shown(value)} is not a valid step id: use 1-{MAX_STEP_ID_CHARS} lowercase "
                "letters, digits, '_' or '-', starting with a letter"
            )
        return value

    @field_validator("persona")
    @classmethod
    def _check_persona(cls, value: str) -> str:
        if value and value not in PERSONAS:
            raise ValueError(
                f"unknown persona {shown(value)}{did_you_mean(value, PERSONAS)} "
                f"(known personas: {', '.join(sorted(PERSONAS))})"
            )
        return value

    @field_validator("kind", mode="before")
    @classmethod
    def _check_kind(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in list(StepKind):
            if value in _PLANNED_KINDS:
                raise ValueError(f"step kind {value!r} is not supported yet")
            known = ", ".join(StepKind)
            raise ValueError(f"unknown step kind {shown(value)} (known kinds: {known})")
        return value


class WorkflowSpec(BaseModel):
    """A validated workflow: a DAG of steps plus the defaults they inherit.

    Attributes:
        name: The workflow's name, shown on runs.
        description: What the workflow is for.
        default_timeout: Per-attempt timeout of steps that set none.
        default_deadline: Whole-step deadline of steps that set none.
        retry: Retry policy of steps that set none.
        model: Model of steps that set none (None: the worker's default).
        effort: Effort level of steps that set none (None: the model's default).
        budget: What the whole run may spend, every step and attempt together (None:
            unlimited); a step's own ``budget`` narrows it for that step.
        shared_paths: Paths (or directories, ending in "/") several steps may write;
            any other path written by two steps is a conflict that fails the attempt.
        fallback: Fallbacks of steps that declare none.
        steps: In declaration order, which is also the order runs list them in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    default_timeout: Timeout = timedelta(minutes=10)
    default_deadline: Deadline = timedelta(hours=2)
    retry: RetryPolicy = RetryPolicy()
    model: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)
    effort: Effort | None = None
    budget: Budget | None = None
    shared_paths: tuple[SharedPath, ...] = Field(default=(), max_length=MAX_SHARED_PATHS)
    fallback: Fallbacks | None = Field(default=None, max_length=MAX_FALLBACKS)
    steps: tuple[StepSpec, ...] = Field(min_length=1, max_length=MAX_STEPS)

    # Derived from `steps` once; private attributes take no part in dumps.
    _by_id: dict[str, StepSpec] = PrivateAttr(default_factory=dict)
    _dependents: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        # Shown in listings and terminals: no escape sequences, no bidi tricks.
        if not all(is_printable_char(ch) for ch in value):
            raise ValueError(
                f"{shown(value)} contains control or formatting characters; use printable text"
            )
        return value

    @model_validator(mode="after")
    def _check_graph(self) -> Self:
        problems = check_graph([(i, s.id, s.depends_on) for i, s in enumerate(self.steps)])
        if problems:
            raise GraphError(problems)
        return self

    @model_validator(mode="after")
    def _rework_upstream(self) -> Self:
        problems = check_rework(self)
        if problems:
            raise GraphError(
                [WorkflowProblem(field=f"steps[{where}", reason=r) for where, r in problems]
            )
        return self

    @model_validator(mode="after")
    def _deadlines_fit_timeouts(self) -> Self:
        for step in self.steps:
            if step.kind is StepKind.APPROVAL:
                continue  # its timeout is a wait for a person, not an attempt's
            timeout = step.timeout or self.default_timeout
            deadline = step.deadline or self.default_deadline
            if deadline < timeout:
                which = "deadline" if step.deadline else "default_deadline"
                raise ValueError(
                    f"step {shown(step.id)}: its {which} ({format_duration(deadline)}) is shorter "
                    f"than one attempt's timeout ({format_duration(timeout)})"
                )
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Indexes the steps by id and by dependency (pydantic calls this)."""
        # Built in locals: private attributes are slow to reach through pydantic.
        by_id = {s.id: s for s in self.steps}
        dependents: dict[str, list[str]] = {s.id: [] for s in self.steps}
        for step in self.steps:
            for dep in dict.fromkeys(step.depends_on):
                if dep in dependents:
                    dependents[dep].append(step.id)
        self._by_id = by_id
        self._dependents = dependents

    def _private(self, name: str) -> Any:
        # Read from pydantic's store of private attributes directly: `self._by_id` takes
        # a failed attribute lookup and BaseModel.__getattr__ (about 2 µs), and the
        # scheduler looks steps up a dozen times per dispatch.
        private = self.__pydantic_private__
        assert private is not None  # set by model_post_init
        return private[name]

    def step(self, step_id: str) -> StepSpec:
        """Returns the step with this id.

        Raises:
            KeyError: If the workflow has no such step.
        """
        try:
            return self._private("_by_id")[step_id]  # type: ignore[no-any-return]
        except KeyError:
            raise KeyError(f"workflow {self.name!r} has no step {step_id!r}") from None

    def timeout_for(self, step_id: str) -> timedelta:
        """Returns the per-attempt timeout of a step, falling back to the default."""
        return self.step(step_id).timeout or self.default_timeout

    def deadline_for(self, step_id: str) -> timedelta:
        """Returns the whole-step deadline of a step, falling back to the default."""
        return self.step(step_id).deadline or self.default_deadline

    def retry_for(self, step_id: str) -> RetryPolicy:
        """Returns the retry policy of a step, falling back to the workflow's."""
        return self.step(step_id).retry or self.retry

    def model_for(self, step_id: str) -> str | None:
        """The step's model, else the workflow's; None means the worker's default."""
        return self.step(step_id).model or self.model

    def effort_for(self, step_id: str) -> str | None:
        """The step's effort level, else the workflow's; None means the default."""
        return self.step(step_id).effort or self.effort

    def fallback_for(self, step_id: str) -> Fallbacks:
        """The step's declared fallbacks, else the workflow's, in order (may be empty)."""
        found = self.step(step_id).fallback
        return found if found is not None else (self.fallback or ())

    def ancestors(self, step_id: str, limit: int | None = None) -> list[str]:
        """Returns every step this one transitively depends on, nearest first.

        Direct dependencies come first in declared order, then theirs, and so on;
        each step appears once, at its nearest distance. With `limit`, the first
        `limit` of them (the walk stops there: a step deep in a long chain does not
        walk the whole chain for its nearest few).

        Raises:
            KeyError: If the workflow has no such step.
        """
        by_id = self._private("_by_id")
        return self._walk(step_id, lambda s: by_id[s].depends_on, limit)

    def dependents(self, step_id: str) -> list[str]:
        """Returns every step that transitively depends on this one, nearest first.

        Raises:
            KeyError: If the workflow has no such step.
        """
        dependents = self._private("_dependents")
        return self._walk(step_id, lambda s: dependents[s])

    def _walk(
        self, start: str, edges: Callable[[str], Sequence[str]], limit: int | None = None
    ) -> list[str]:
        self.step(start)
        seen = {start}
        order: list[str] = []
        frontier = [start]
        while frontier:
            following: list[str] = []
            for current in frontier:
                for nxt in edges(current):
                    if nxt not in seen:
                        seen.add(nxt)
                        order.append(nxt)
                        if len(order) == limit:
                            return order
                        following.append(nxt)
            frontier = following
        return order


def check_graph(
    nodes: Sequence[tuple[int, str, Sequence[str]]], hints: HintBudget | None = None
) -> list[WorkflowProblem]:
    """Finds duplicate ids, bad dependencies and cycles.

    Works on bare (index, id, depends_on) triples so that ``loader`` can check the
    graph even when some steps have other errors.

    Args:
        nodes: Every declared step that has an id, in declaration order.
        hints: The "did you mean" budget shared with the rest of the validation.

    Returns:
        The problems, in declaration order; cycles last.
    """
    labels = step_labels((i, step_id) for i, step_id, _ in nodes)
    problems: list[WorkflowProblem] = []
    hints = hints or HintBudget()
    first_index: dict[str, int] = {}
    for index, step_id, _ in nodes:
        if step_id in first_index:
            problems.append(
                WorkflowProblem(
                    field=f"steps[{index}].id",
                    reason=f"duplicate step id {shown(step_id)} (also used by "
                    f"steps[{first_index[step_id]}])",
                )
            )
        else:
            first_index[step_id] = index
    edges: dict[str, list[str]] = {step_id: [] for step_id in first_index}
    for index, step_id, depends_on in nodes:
        field = f"{labels[index]}.depends_on"
        # Counted only when repeated: the Counter cost a 1,000-step workflow a fifth of
        # this check.
        counts = Counter(depends_on) if len(set(depends_on)) != len(depends_on) else None
        for dep in counts or depends_on:
            count = counts[dep] if counts else 1
            if dep == step_id:
                problems.append(
                    WorkflowProblem(field=field, reason=f"step {shown(step_id)} depends on itself")
                )
                continue
            if dep not in first_index:
                hint = hints.did_you_mean(dep, first_index)
                reason = f"step {shown(step_id)} depends on unknown step {shown(dep)}{hint}"
                problems.append(WorkflowProblem(field=field, reason=reason))
                continue
            if count > 1:
                reason = f"step {shown(step_id)} lists {shown(dep)} more than once"
                problems.append(WorkflowProblem(field=field, reason=reason))
            # A duplicate id's edges would make cycles through the wrong step.
            if first_index[step_id] == index:
                edges[dep].append(step_id)
    problems.extend(
        WorkflowProblem(
            field="steps",
            reason=f"cycle: {_cycle_text(cycle)} (each step depends on the one before it)",
        )
        for cycle in find_cycles(edges)[: MAX_PROBLEMS_LISTED + 1]
    )
    return problems


def _cycle_text(cycle: list[str]) -> str:
    text = " -> ".join(
        step_id if STEP_ID_PATTERN.fullmatch(step_id) else shown(step_id) for step_id in cycle
    )
    return text if len(text) <= 2 * MAX_ECHO_CHARS else text[: 2 * MAX_ECHO_CHARS] + "…"


def find_cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Returns the cycles a depth-first walk closes, each as ``[a, b, ..., a]``.

    Args:
        edges: For each step (in declaration order), the steps that depend on it.

    Returns:
        One cycle per edge that leads back into the current path; every step
        caught in a cycle is in at least one of them.
    """
    # Iterative, so that a long chain of steps cannot hit the recursion limit.
    done: set[str] = set()
    cycles: list[list[str]] = []
    for root in edges:
        if root in done:
            continue
        path, on_path, work = [root], {root}, [iter(edges[root])]
        while work:
            nxt = next(work[-1], None)
            if nxt is None:
                on_path.discard(path[-1])
                done.add(path.pop())
                work.pop()
            elif nxt in on_path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                work.append(iter(edges[nxt]))
    return cycles


def step_labels(ids: Iterable[tuple[int, str]]) -> dict[int, str]:
    """Names each step for error paths: ``steps[<id>]`` if the id is valid and
    unique, else ``steps[<index>]`` so the path is never ambiguous."""
    pairs = list(ids)
    counts = Counter(step_id for _, step_id in pairs)
    return {
        i: f"steps[{step_id}]"
        if counts[step_id] == 1 and STEP_ID_PATTERN.fullmatch(step_id)
        else f"steps[{i}]"
        for i, step_id in pairs
    }


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Returns `` (did you mean 'x'?)`` for a close match, else an empty string.

    Bounded: no suggestion for a long word or among very many choices, since each
    comparison costs the product of the two lengths.
    """
    if len(word) > MAX_HINT_WORD_CHARS:
        return ""
    candidates = [c for c in choices if len(c) <= MAX_HINT_WORD_CHARS]
    if len(candidates) > MAX_HINT_CHOICES:
        return ""
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {shown(close[0])}?)" if close else ""


class HintBudget:
    """At most MAX_HINTS suggestions per validation: a workflow with thousands of
    unknown names must not cost thousands of fuzzy searches."""

    def __init__(self) -> None:
        self._left = MAX_HINTS

    def did_you_mean(self, word: str, choices: Iterable[str]) -> str:
        if self._left <= 0:
            return ""
        self._left -= 1
        return did_you_mean(word, choices)


def _line(problem: WorkflowProblem) -> str:
    return f"{problem.field}: {problem.reason}"

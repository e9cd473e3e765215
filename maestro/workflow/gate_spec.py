"""What gate steps and rework declare in a workflow, and the checks on them.

A gate step runs checks in the sandbox and judges measured metrics against explicit
`min`/`max` thresholds; `on_fail` sends its report back to upstream steps for a
bounded number of rounds (a blocking reviewer step may declare the same). Everything
here is checked when the workflow is validated, before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from maestro.sandbox.gate import Threshold
from maestro.sandbox.metrics import METRICS, get_metric
from maestro.sandbox.models import CheckName
from maestro.workflow.limits import MAX_DEPENDENCIES, shown
from maestro.workflow.step_kind import StepKind

if TYPE_CHECKING:
    from maestro.workflow.spec import StepSpec, WorkflowSpec

MAX_REWORK_ROUNDS = 5
"""Rework rounds one step may ask for: each round re-runs model calls, which cost."""

MAX_THRESHOLDS = len(METRICS)


class ReworkPolicy(BaseModel):
    """`on_fail` / `on_reject`: which upstream steps run again, and how often.

    Attributes:
        rework: Steps upstream of this one that get its report as feedback; the steps
            between them and this one run again too.
        max_rounds: Rework rounds at most; after the last the run fails.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rework: tuple[str, ...] = Field(min_length=1, max_length=MAX_DEPENDENCIES)
    max_rounds: StrictInt = Field(default=1, ge=1, le=MAX_REWORK_ROUNDS)


def check_gate_fields(step: StepSpec) -> None:
    """A gate's checks and thresholds fit together; other kinds declare none.

    Raises:
        ValueError: what is wrong, for the step's validation error.
    """
    if step.kind is not StepKind.GATE:
        # Tested field by field before the message is built: this runs for every step.
        if step.checks or step.thresholds or step.coverage:
            extra = [name for name in ("checks", "thresholds", "coverage") if getattr(step, name)]
            raise ValueError(f"{', '.join(extra)} only apply to steps of kind gate")
        return
    if step.persona:
        raise ValueError("a gate step runs checks, not a persona: remove 'persona'")
    if step.on_reject is not None:
        raise ValueError("on_reject applies to approval steps; a gate uses on_fail")
    if not step.checks:
        known = ", ".join(c.value for c in CheckName)
        raise ValueError(f"a gate step needs checks (known checks: {known})")
    if len(set(step.checks)) != len(step.checks):
        raise ValueError("checks lists a check more than once")
    if not step.thresholds:
        raise ValueError("a gate step needs thresholds, e.g. {tests_failed: {max: 0}}")
    for name in step.thresholds:
        metric = get_metric(name)
        if metric is None:
            continue  # reported at the thresholds field by check_thresholds
        if metric.check not in step.checks:
            raise ValueError(
                f"metric {shown(name)} is measured by the {metric.check.value} check, "
                "which this gate does not run"
            )
        if metric.needs_coverage and not step.coverage:
            raise ValueError(f"metric {shown(name)} needs `coverage: true`")


def check_approval_fields(step: StepSpec) -> None:
    """An approval asks a person; other kinds take no approval fields.

    Raises:
        ValueError: what is wrong, for the step's validation error.
    """
    if step.kind is not StepKind.APPROVAL:
        # By value, not by fields set: a dumped and reloaded spec sets every field.
        if step.prompt or step.on_reject or step.on_timeout != "reject":
            extra = [n for n in ("prompt", "on_reject") if getattr(step, n)]
            extra += ["on_timeout"] if step.on_timeout != "reject" else []
            raise ValueError(f"{', '.join(extra)} only apply to steps of kind approval")
        return
    if step.persona:
        raise ValueError("an approval step asks a person, not a persona: remove 'persona'")
    if step.on_fail is not None:
        raise ValueError("an approval step sends work back with on_reject, not on_fail")


def rework_policy(step: StepSpec) -> ReworkPolicy | None:
    """The step's rework: `on_fail` of gates and reviewers, `on_reject` of approvals."""
    return step.on_fail or step.on_reject


def check_thresholds(value: Mapping[str, Threshold]) -> Mapping[str, Threshold]:
    """Threshold names are known metrics (reported at the thresholds field)."""
    if len(value) > MAX_THRESHOLDS:
        raise ValueError(f"at most {MAX_THRESHOLDS} thresholds")
    for name in value:
        if get_metric(name) is None:
            raise ValueError(f"unknown metric {shown(name)} (known metrics: {', '.join(METRICS)})")
    return value


def check_rework(spec: WorkflowSpec) -> list[tuple[str, str]]:
    """Rework targets exist and are upstream of the step that names them.

    Returns:
        (field inside `steps[`, reason) for each problem, e.g. ``checks].on_fail``.
    """
    problems: list[tuple[str, str]] = []
    for step in spec.steps:
        policy = rework_policy(step)
        if policy is None:
            continue
        which = "on_fail" if step.on_fail is not None else "on_reject"
        upstream = set(spec.ancestors(step.id))
        for target in policy.rework:
            if target == step.id:
                problems.append(
                    (f"{step.id}].{which}", f"{which}.rework names the step itself ({target!r})")
                )
            elif target not in upstream:
                where = (
                    "an unknown step"
                    if target not in {s.id for s in spec.steps}
                    else ("a step that is not upstream of it")
                )
                problems.append(
                    (f"{step.id}].{which}", f"{which}.rework names {shown(target)}, {where}")
                )
    return problems


def steps_to_rerun(spec: WorkflowSpec, step_id: str, rework: Sequence[str]) -> list[str]:
    """The steps of a rework round, in workflow order: the rework steps, every step
    between them and `step_id`, and `step_id` itself."""
    upstream = set(spec.ancestors(step_id))
    chosen = set(rework)
    for target in rework:
        chosen |= {s for s in spec.dependents(target) if s in upstream}
    chosen.add(step_id)
    return [s.id for s in spec.steps if s.id in chosen]

"""Gate steps and rework in workflows: validation, and what a rework round re-runs."""

from __future__ import annotations

import textwrap

import pytest

from maestro.workflow import StepKind, WorkflowError, parse_workflow_yaml
from maestro.workflow.gate_spec import steps_to_rerun
from scheduler.rework import exhausted_reason, plan_rework

FLOW = """
name: t
steps:
  - {{id: design, persona: solution_architect}}
  - {{id: backend, persona: backend_developer, depends_on: [design]}}
  - {{id: frontend, persona: frontend_developer, depends_on: [design]}}
  - {{id: qa, persona: qa_engineer, depends_on: [backend, frontend]}}
  - {{id: docs, persona: technical_writer, depends_on: [design]}}
  - id: checks
    kind: gate
    depends_on: [qa]
    checks: {checks}
    thresholds: {thresholds}
    on_fail: {on_fail}
"""


def flow(
    checks: str = "[pytest, ruff]",
    thresholds: str = "{tests_passed: {min: 1}, lint_errors: {max: 0}}",
    on_fail: str = "{rework: [backend], max_rounds: 2}",
) -> str:
    return FLOW.format(checks=checks, thresholds=thresholds, on_fail=on_fail)


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(WorkflowError) as caught:
        parse_workflow_yaml(textwrap.dedent(text), source="test.yaml")
    return [(p.field, p.reason) for p in caught.value.problems]


def test_a_gate_step_is_valid_without_a_persona() -> None:
    spec = parse_workflow_yaml(flow())
    gate = spec.step("checks")
    assert gate.kind is StepKind.GATE
    assert gate.persona == ""
    assert gate.thresholds["tests_passed"].min == 1
    assert gate.thresholds["lint_errors"].max == 0
    assert gate.on_fail is not None
    assert (gate.on_fail.rework, gate.on_fail.max_rounds) == (("backend",), 2)


def test_an_unknown_metric_is_rejected_at_its_field() -> None:
    ((field, reason),) = problems(flow(thresholds="{tests_pased: {min: 1}}"))
    assert field == "steps[checks].thresholds"
    assert reason.startswith("unknown metric 'tests_pased' (known metrics: tests_collected")


def test_an_unknown_check_is_rejected() -> None:
    ((field, reason),) = problems(flow(checks="[pytest, mypy]"))
    assert field == "steps[checks].checks[1]"
    assert "pytest" in reason and "compile" in reason


def test_a_metric_whose_check_does_not_run_is_rejected() -> None:
    ((field, reason),) = problems(flow(checks="[pytest]"))
    assert field == "steps[checks]"
    assert reason == (
        "metric 'lint_errors' is measured by the ruff check, which this gate does not run"
    )


def test_a_threshold_needs_a_bound_in_order() -> None:
    found = problems(flow(thresholds="{tests_passed: {}, lint_errors: {min: 2, max: 1}}"))
    assert ("steps[checks].thresholds.tests_passed", "a threshold needs min, max or both") in found
    assert (
        "steps[checks].thresholds.lint_errors",
        "min (2) is greater than max (1)",
    ) in found


def test_coverage_needs_to_be_asked_for() -> None:
    ((field, reason),) = problems(flow(thresholds="{coverage_percent: {min: 80}}"))
    assert (field, reason) == ("steps[checks]", "metric 'coverage_percent' needs `coverage: true`")


def test_a_gate_needs_checks_and_thresholds() -> None:
    ((_, reason),) = problems(flow(checks="[]", thresholds="{}"))
    assert reason.startswith("a gate step needs checks")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("ghost", "on_fail.rework names 'ghost', an unknown step"),
        ("docs", "on_fail.rework names 'docs', a step that is not upstream of it"),
        ("checks", "on_fail.rework names the step itself ('checks')"),
    ],
)
def test_rework_targets_must_be_upstream(target: str, reason: str) -> None:
    assert problems(flow(on_fail=f"{{rework: [{target}]}}")) == [("steps[checks].on_fail", reason)]


def test_rounds_are_bounded() -> None:
    ((field, reason),) = problems(flow(on_fail="{rework: [backend], max_rounds: 9}"))
    assert field == "steps[checks].on_fail.max_rounds"
    assert reason == "must be at most 5, got 9"


def test_persona_steps_take_no_gate_fields() -> None:
    ((field, reason),) = problems(
        "name: t\nsteps:\n  - {id: a, persona: qa_engineer, thresholds: {lint_errors: {max: 0}}}\n"
    )
    assert (field, reason) == ("steps[a]", "thresholds only apply to steps of kind gate")


def test_a_round_reruns_the_targets_and_everything_between_them_and_the_gate() -> None:
    spec = parse_workflow_yaml(flow())
    # frontend is not downstream of backend and docs not upstream of the gate: kept.
    assert steps_to_rerun(spec, "checks", ["backend"]) == ["backend", "qa", "checks"]
    assert steps_to_rerun(spec, "checks", ["design"]) == [
        "design",
        "backend",
        "frontend",
        "qa",
        "checks",
    ]


def test_plan_rework_gives_the_targets_the_report_and_their_previous_summary() -> None:
    spec = parse_workflow_yaml(flow())
    plan = plan_rework(
        spec,
        "checks",
        0,
        report="# Gate failed\n- tests_failed = 2, above the maximum 0",
        reason="tests_failed = 2",
        previous_summaries={"backend": "wrote app/core.py"},
    )
    assert plan is not None
    assert (plan.round, plan.steps) == (1, ("backend", "qa", "checks"))
    assert set(plan.feedback) == {"backend"}
    text = plan.feedback["backend"]
    assert "rework round 1 of 2" in text
    assert "tests_failed = 2, above the maximum 0" in text
    assert "wrote app/core.py" in text


def test_no_round_is_planned_past_max_rounds() -> None:
    spec = parse_workflow_yaml(flow())
    plan = plan_rework(spec, "checks", 2, report="r", reason="x", previous_summaries={})
    assert plan is None
    assert exhausted_reason("gate", "checks", 2, "tests_failed = 1") == (
        "gate 'checks' failed in round 2 after 2 rework rounds: tests_failed = 1"
    )

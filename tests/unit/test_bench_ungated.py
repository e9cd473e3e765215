"""The bench's 'without its gate' variant of the default workflow."""

from __future__ import annotations

from bench.figures import ungated_request, without_gates
from maestro.workflow import StepKind, builtin_workflow, parse_workflow_yaml


def test_the_default_workflow_without_its_gate_keeps_every_other_step_in_order() -> None:
    default = builtin_workflow("sdlc-parallel")
    spec = parse_workflow_yaml(ungated_request().workflow_yaml)

    gates = {s.id for s in default.steps if s.kind is StepKind.GATE}
    assert gates == {"checks"}
    assert [s.id for s in spec.steps] == [s.id for s in default.steps if s.id not in gates]
    assert all(s.kind is StepKind.PERSONA for s in spec.steps)
    # The review followed the gate; it now follows what the gate followed.
    assert spec.step("review").depends_on == ("packaging",)
    assert spec.step("docs").depends_on == ("review",)


def test_a_step_after_two_gates_depends_on_what_each_followed_once() -> None:
    text = """
name: two-gates
steps:
  - {id: a, persona: backend_developer}
  - {id: b, persona: frontend_developer}
  - {id: g1, kind: gate, depends_on: [a, b], checks: [pytest]}
  - {id: g2, kind: gate, depends_on: [b], checks: [ruff]}
  - {id: c, persona: code_reviewer, depends_on: [g1, g2, a]}
"""
    spec = parse_workflow_yaml(without_gates(text))

    assert [s.id for s in spec.steps] == ["a", "b", "c"]
    assert spec.step("c").depends_on == ("a", "b")


def test_a_gate_after_a_gate_passes_on_what_the_first_followed() -> None:
    text = """
name: gate-after-gate
steps:
  - {id: a, persona: backend_developer}
  - {id: g1, kind: gate, depends_on: [a], checks: [pytest]}
  - {id: g2, kind: gate, depends_on: [g1], checks: [ruff]}
  - {id: c, persona: code_reviewer, depends_on: [g2]}
"""
    spec = parse_workflow_yaml(without_gates(text))

    assert [s.id for s in spec.steps] == ["a", "c"]
    assert spec.step("c").depends_on == ("a",)

"""Typed answers of document personas: schemas the API accepts, validation, rendering;
and the per-step model, effort and budget of a workflow."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from maestro.personas import PERSONAS, PersonaMode
from maestro.workflow import WorkflowError, parse_workflow_yaml
from persona_service.documents import (
    DOCUMENT_KINDS,
    GENERIC,
    ArchitectureAnswer,
    RequirementsAnswer,
    document_kind,
)
from persona_service.models import Verdict

ARCHITECTURE = {
    "summary": "A store behind an HTTP API.",
    "title": "Todo",
    "overview": "Two components.",
    "components": [
        {"name": "api", "responsibility": "Serves HTTP.", "paths": ["app/"]},
        {"name": "client", "responsibility": "Calls the API.", "paths": ["frontend/"]},
    ],
    "data_model": [
        {
            "name": "Todo",
            "description": "One item.",
            "fields": [{"name": "id", "type": "int", "description": "Assigned by the store."}],
        }
    ],
    "interfaces": [
        {
            "name": "Todo HTTP API",
            "kind": "http",
            "provided_by": "api",
            "used_by": ["client"],
            "description": "JSON over HTTP.",
            "operations": [
                {
                    "name": "Create a todo",
                    "signature": "POST /todos",
                    "input": '{"title": str}',
                    "output": '201 {"id": int, "title": str}',
                    "errors": ["400 when the title is missing"],
                }
            ],
        }
    ],
    "decisions": [
        {
            "id": "ADR-1",
            "title": "Standard library only",
            "status": "accepted",
            "context": "Small scope.",
            "decision": "Use http.server.",
            "consequences": "No framework features.",
        }
    ],
    "requirement_coverage": [{"requirement_id": "FR-1", "how": "POST /todos"}],
}


def test_every_document_persona_has_a_closed_api_ready_schema() -> None:
    for name, kind in DOCUMENT_KINDS.items():
        assert PERSONAS[name].mode is PersonaMode.DOCUMENT
        schema = kind.schema()
        text = json.dumps(schema)
        assert '"additionalProperties": false' in text
        assert "minLength" not in text and '"format": "text"' not in text
    assert document_kind(PERSONAS["backend_developer"]) is GENERIC


def test_the_architecture_renders_interfaces_both_sides_implement() -> None:
    kind = DOCUMENT_KINDS["solution_architect"]
    rendered = kind.render(
        ArchitectureAnswer.model_validate(ARCHITECTURE), PERSONAS["solution_architect"]
    )

    assert set(rendered.files) == {"docs/architecture.md", "docs/decisions.md"}
    arch = rendered.files["docs/architecture.md"]
    assert "### Todo HTTP API (http)" in arch
    assert "Implemented by api; used by client." in arch
    assert "#### `POST /todos`" in arch and "- Error: 400 when the title is missing" in arch
    assert "| id | int | Assigned by the store. |" in arch
    assert "## ADR-1: Standard library only" in rendered.files["docs/decisions.md"]
    assert rendered.verdict is None


def test_requirement_ids_must_be_unique_and_criteria_present() -> None:
    requirement = {
        "id": "FR-1",
        "kind": "functional",
        "title": "t",
        "statement": "s",
        "concerns": [],
        "priority": "must",
        "acceptance_criteria": ["c"],
    }
    base = {
        "summary": "s",
        "title": "t",
        "overview": "o",
        "requirements": [requirement, requirement],
        "assumptions": [],
        "open_questions": [],
    }
    with pytest.raises(ValidationError, match="requirement ids repeat: FR-1"):
        RequirementsAnswer.model_validate(base)
    no_criteria = {**base, "requirements": [{**requirement, "acceptance_criteria": []}]}
    with pytest.raises(ValidationError, match="acceptance_criteria"):
        RequirementsAnswer.model_validate(no_criteria)


def test_an_approving_review_says_so() -> None:
    kind = DOCUMENT_KINDS["security_reviewer"]
    answer = kind.answer.model_validate(
        {
            "summary": "Fine.",
            "verdict": "approve",
            "assessment": "No issues.",
            "findings": [],
            "strengths": [],
        }
    )
    rendered = kind.render(answer, PERSONAS["security_reviewer"])
    assert rendered.verdict is Verdict.APPROVE and rendered.findings == ""
    doc = rendered.files["docs/security-review.md"]
    assert doc.startswith("# Security reviewer\n\nVerdict: **approve**")
    assert "No findings." in doc


WORKFLOW = """
name: budgets
model: claude-opus-5-5
effort: medium
budget: {usd: 5, tokens: 2_000_000}
steps:
  - {id: a, persona: requirements_analyst}
  - id: b
    persona: backend_developer
    depends_on: [a]
    model: claude-someday-9
    effort: xhigh
    budget: {usd: 0.5}
"""


def test_steps_take_model_effort_and_budget_with_workflow_defaults() -> None:
    spec = parse_workflow_yaml(WORKFLOW)
    assert (spec.model_for("a"), spec.effort_for("a")) == ("claude-opus-5-5", "medium")
    # The workflow's budget is the run's; a step's narrows it for that step.
    assert spec.budget is not None and (spec.budget.usd, spec.budget.tokens) == (5.0, 2_000_000)
    assert spec.step("a").budget is None
    assert (spec.model_for("b"), spec.effort_for("b")) == ("claude-someday-9", "xhigh")
    budget_b = spec.step("b").budget
    assert budget_b is not None and (budget_b.usd, budget_b.tokens) == (0.5, None)
    bare = parse_workflow_yaml("name: t\nsteps:\n  - {id: a, persona: qa_engineer}\n")
    assert (bare.model_for("a"), bare.effort_for("a"), bare.budget) == (None, None, None)


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        (
            "budget: {dollars: 5}",
            "steps[a].budget",
            "unknown budget field 'dollars' (allowed: usd, tokens)",
        ),
        ("budget: {}", "steps[a].budget", "a budget needs usd, tokens or both"),
        ("budget: {tokens: 1.5}", "steps[a].budget.tokens", "expected an integer, got a number"),
        (
            "effort: extreme",
            "steps[a].effort",
            "Input should be 'low', 'medium', 'high', 'xhigh' or 'max'",
        ),
        ("model: ''", "steps[a].model", "must not be empty"),
    ],
)
def test_bad_model_effort_and_budget_are_precise_errors(line: str, field: str, reason: str) -> None:
    with pytest.raises(WorkflowError) as caught:
        parse_workflow_yaml(f"name: t\nsteps:\n  - id: a\n    persona: qa_engineer\n    {line}\n")
    assert [(p.field, p.reason) for p in caught.value.problems] == [(field, reason)]

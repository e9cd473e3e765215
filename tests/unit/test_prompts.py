"""The user message of a step: complete, bounded to what it was given, deterministic."""

from __future__ import annotations

from maestro.personas import PERSONAS, get_persona
from persona_service.models import DependencyContext, StepRequest, TextFile
from persona_service.prompts import (
    SUBMIT_TOOL_NAME,
    build_user_message,
    fence,
    language_hint,
    render_deliverable,
)

REQUIREMENT = "Build a recipe box. Cooks can save recipes and search them by ingredient."


def _request(**changes: object) -> StepRequest:
    base: dict[str, object] = {
        "run_id": "run-1",
        "step_id": "qa",
        "attempt": 1,
        "persona": "qa_engineer",
        "requirement": REQUIREMENT,
        "instructions": "Focus on the search feature.",
        "dependencies": (
            DependencyContext(
                step_id="backend",
                persona="backend_developer",
                summary="Wrote the recipes API.",
                files=(
                    TextFile(path="app/api.py", content="def search(term):\n    return []\n"),
                    TextFile(path="README.md", content="Use it:\n```sh\nrun\n```\n"),
                ),
                omitted_paths=("app/big_table.py", "data/seed.json"),
            ),
            DependencyContext(step_id="design", persona="solution_architect", summary="REST."),
        ),
    }
    base.update(changes)
    return StepRequest.model_validate(base)


def test_message_has_requirement_instructions_and_deliverables() -> None:
    persona = PERSONAS["qa_engineer"]
    message = build_user_message(_request(), persona)

    assert REQUIREMENT in message
    assert "Focus on the search feature." in message
    assert persona.role in message
    for deliverable in persona.deliverables:
        assert f"`{deliverable.path}`" in message
        assert deliverable.description in message
    assert SUBMIT_TOOL_NAME in message


def test_message_has_dependency_summaries_files_and_omitted_paths() -> None:
    message = build_user_message(_request(), PERSONAS["qa_engineer"])

    assert "## Step `backend` (backend_developer)" in message
    assert "Wrote the recipes API." in message
    assert "## Step `design` (solution_architect)" in message
    assert "File `app/api.py`:\n```python\ndef search(term):\n    return []\n```" in message
    assert "- `app/big_table.py`" in message
    assert "- `data/seed.json`" in message
    # Dependencies appear in the order the scheduler chose.
    assert message.index("`backend`") < message.index("`design`")


def test_file_with_fences_gets_a_longer_fence() -> None:
    text = fence("README.md", "Use it:\n```sh\nrun\n```\n")
    assert text.startswith("File `README.md`:\n````markdown\n")
    assert text.endswith("\n````")
    assert "```sh\nrun\n```" in text


def test_fence_closes_files_without_a_final_newline() -> None:
    assert fence("x.txt", "no newline") == "File `x.txt`:\n```text\nno newline\n```"


def test_language_hints() -> None:
    assert language_hint("app/x.py") == "python"
    assert language_hint("Dockerfile") == "dockerfile"
    assert language_hint("docs/NOTES.MD") == "markdown"
    assert language_hint(".ci/run") == ""


def test_directory_deliverables_say_so() -> None:
    backend = PERSONAS["backend_developer"]
    lines = [render_deliverable(d) for d in backend.deliverables]
    assert lines[0].startswith("- `app/` (a directory: put your code files under it)")


def test_first_step_says_it_has_no_dependencies() -> None:
    message = build_user_message(
        _request(dependencies=(), instructions="", step_id="reqs"),
        PERSONAS["requirements_analyst"],
    )
    assert "None: this step starts from the requirement alone." in message
    assert "Produce your deliverables" in message
    assert "attempt" not in message


def test_retry_attempt_is_mentioned() -> None:
    message = build_user_message(_request(attempt=3), PERSONAS["qa_engineer"])
    assert "This is attempt 3" in message


def test_message_is_deterministic_and_contains_only_the_request() -> None:
    persona = get_persona("qa_engineer")
    assert persona is not None
    first = build_user_message(_request(), persona)
    assert first == build_user_message(_request(), persona)
    assert "run-1" not in first

"""A step's prompt: documents first and task last, cache breakpoints where steps share a
prefix, context chosen by what the persona needs within a budget, deterministic."""

from __future__ import annotations

from maestro.personas import PERSONAS, PersonaMode, get_persona
from persona_service.context import choose_context, starting_point
from persona_service.models import DependencyContext, StepRequest, TextFile
from persona_service.prompts import (
    SYSTEM_PROMPTS,
    Prompt,
    build_prompt,
    fence,
    language_hint,
    render_deliverable,
)

REQUIREMENT = "Build a recipe box. Cooks can save recipes and search them by ingredient."
REQS = TextFile(path="docs/requirements.md", content="# Requirements\n\nFR-1: save.\n")
ARCH = TextFile(path="docs/architecture.md", content="# Architecture\n\nGET /recipes\n")


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
            DependencyContext(
                step_id="design",
                persona="solution_architect",
                summary="REST.",
                files=(ARCH, REQS),
            ),
        ),
    }
    base.update(changes)
    return StepRequest.model_validate(base)


def _prompt(request: StepRequest, name: str = "qa_engineer", budget: int = 64 * 1024) -> Prompt:
    persona = PERSONAS[name]
    context = choose_context(persona, starting_point(request), budget)
    return build_prompt(request, persona, context, persona.mode)


def test_documents_come_first_and_the_task_last() -> None:
    persona = PERSONAS["qa_engineer"]
    prompt = _prompt(_request())
    texts = [b["text"] for b in prompt.blocks]

    assert texts[0] == f"# Requirement\n\n{REQUIREMENT}\n"
    # The shared documents in their fixed order, whatever order the workspace had.
    assert "File `docs/requirements.md`" in texts[1]
    assert "File `docs/architecture.md`" in texts[2]
    task = texts[-1]
    assert task.startswith("# Your role and task (step `qa`)")
    assert persona.system_prompt in task
    assert "Focus on the search feature." in task
    for deliverable in persona.deliverables:
        assert render_deliverable(deliverable) in task
    assert "submit" in task


def test_breakpoints_sit_on_the_system_prompt_the_requirement_and_the_last_shared_doc() -> None:
    prompt = _prompt(_request())

    assert [b.get("cache_control") for b in prompt.system] == [{"type": "ephemeral"}]
    marked = [i for i, b in enumerate(prompt.blocks) if "cache_control" in b]
    assert marked == [0, 2]  # the requirement, and the last of the two shared documents


def test_every_persona_of_a_mode_shares_the_system_prompt() -> None:
    for name in ("backend_developer", "qa_engineer", "devops_engineer"):
        prompt = _prompt(_request(persona=name), name)
        assert prompt.system[0]["text"] == SYSTEM_PROMPTS[PersonaMode.CODE]
    for name in ("requirements_analyst", "code_reviewer"):
        prompt = _prompt(_request(persona=name), name)
        assert prompt.system[0]["text"] == SYSTEM_PROMPTS[PersonaMode.DOCUMENT]
    assert "frontend developer" not in SYSTEM_PROMPTS[PersonaMode.CODE]


def test_shared_blocks_are_byte_identical_across_personas() -> None:
    qa = _prompt(_request())
    backend = _prompt(_request(persona="backend_developer"), "backend_developer")
    assert qa.blocks[:3] == backend.blocks[:3]


def test_summaries_files_and_what_was_left_out_are_named() -> None:
    text = _prompt(_request()).text()

    assert "## Step `backend` (backend_developer)\nWrote the recipes API." in text
    assert "## Step `design` (solution_architect)\nREST." in text
    assert "File `app/api.py`:\n```python\ndef search(term):\n    return []\n```" in text
    assert "- app/big_table.py" in text
    assert "- data/seed.json" in text
    assert "read them with read_file" in text
    assert text.index("`backend`") < text.index("`design`")


def test_context_follows_the_persona_and_names_what_does_not_fit() -> None:
    request = _request()
    start = starting_point(request)
    # The backend developer needs the design and its own code, not the README.
    backend = choose_context(PERSONAS["backend_developer"], start, 64 * 1024)
    assert [f.path for f in backend.shared] == ["docs/requirements.md", "docs/architecture.md"]
    assert [f.path for f in backend.files] == ["app/api.py"]
    assert "README.md" in backend.left_out

    # A small budget keeps the most important files and names the rest.
    small = choose_context(PERSONAS["qa_engineer"], start, len(REQS.content.encode()) + 1)
    assert [f.path for f in small.shared] == ["docs/requirements.md"]
    assert small.files == ()
    assert set(small.left_out) == {
        "README.md",
        "app/api.py",
        "app/big_table.py",
        "data/seed.json",
        "docs/architecture.md",
    }


def test_the_request_workspace_wins_over_dependency_files() -> None:
    request = _request(
        workspace=(TextFile(path="app/api.py", content="v2\n"),),
        workspace_omitted=("app/huge.bin", "app/api.py"),
    )
    start = starting_point(request)
    assert start.files == {"app/api.py": "v2\n"}
    assert start.unseen == ("app/huge.bin",)


def test_the_nearest_dependency_wins_a_path_two_wrote() -> None:
    nearest = DependencyContext(
        step_id="b", persona="p", summary="", files=(TextFile(path="x.py", content="near"),)
    )
    farther = DependencyContext(
        step_id="a", persona="p", summary="", files=(TextFile(path="x.py", content="far"),)
    )
    start = starting_point(_request(dependencies=(nearest, farther)))
    assert start.files == {"x.py": "near"}


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
    prompt = _prompt(
        _request(dependencies=(), instructions="", step_id="reqs", persona="requirements_analyst"),
        "requirements_analyst",
    )
    text = prompt.text()
    assert "None: this step starts from the requirement alone." in text
    assert "Produce your deliverables" in text
    assert "attempt" not in text
    assert "JSON object" in text


def test_retry_attempt_and_rework_feedback_are_in_the_task() -> None:
    text = _prompt(_request(attempt=3, feedback="1. [high] `app/api.py`: no input check.")).text()
    assert "This is attempt 3" in text
    assert "# Rework feedback" in text
    assert "1. [high] `app/api.py`: no input check." in text
    assert text.index("# Rework feedback") > text.index("# Deliverables")


def test_prompt_is_deterministic_and_contains_only_the_request() -> None:
    persona = get_persona("qa_engineer")
    assert persona is not None
    first = _prompt(_request())
    assert first == _prompt(_request())
    assert "run-1" not in first.text()

"""The offline provider: deterministic, labelled, collision-free, role-fitting files."""

from __future__ import annotations

import ast
import tomllib

import pytest

from maestro.paths import normalize_artifact_path
from maestro.personas import PERSONAS, Deliverable, DeliverableKind, Persona
from persona_service.models import (
    DependencyContext,
    StepOutput,
    StepRequest,
    TextFile,
    UnknownPersona,
)
from persona_service.offline import OfflineProvider

REQUIREMENT = (
    "Build an invoice tracker for a small business.\n"
    "- Staff record invoices with a customer and an amount\n"
    "- Paid invoices are marked as paid; overdue invoices are listed"
)

# Every persona after the steps it builds on (direct dependencies; a full team).
TEAM: dict[str, tuple[str, ...]] = {
    "requirements_analyst": (),
    "solution_architect": ("requirements_analyst",),
    "backend_developer": ("solution_architect",),
    "frontend_developer": ("solution_architect",),
    "qa_engineer": ("backend_developer", "frontend_developer"),
    "devops_engineer": ("backend_developer", "frontend_developer"),
    "security_reviewer": ("devops_engineer",),
    "code_reviewer": ("qa_engineer",),
    "technical_writer": ("code_reviewer", "security_reviewer"),
}


def _request(
    persona: str, deps: tuple[DependencyContext, ...] = (), **changes: object
) -> StepRequest:
    fields: dict[str, object] = {
        "run_id": "run-1",
        "step_id": f"step-{persona}",
        "attempt": 1,
        "persona": persona,
        "requirement": REQUIREMENT,
        "dependencies": deps,
    }
    fields.update(changes)
    return StepRequest.model_validate(fields)


def _as_dependency(name: str, output: StepOutput) -> DependencyContext:
    return DependencyContext(
        step_id=f"step-{name}", persona=name, summary=output.summary, files=output.files
    )


async def _run(request: StepRequest, notes: list[str] | None = None) -> StepOutput:
    sink = notes if notes is not None else []
    return await OfflineProvider().run(
        request, PERSONAS[request.persona], timeout=5.0, progress=sink.append
    )


def _ancestors(name: str) -> list[str]:
    # Nearest first, as the scheduler passes them.
    order: list[str] = []
    frontier = list(TEAM[name])
    while frontier:
        order += [step for step in frontier if step not in order]
        frontier = [dep for step in frontier for dep in TEAM[step] if dep not in order]
    return order


async def _run_team(requirement: str = REQUIREMENT) -> dict[str, StepOutput]:
    outputs: dict[str, StepOutput] = {}
    for name in TEAM:
        context = tuple(_as_dependency(d, outputs[d]) for d in _ancestors(name))
        outputs[name] = await _run(_request(name, context, requirement=requirement))
    return outputs


def _files(output: StepOutput) -> dict[str, str]:
    return {f.path: f.content for f in output.files}


async def test_same_request_gives_byte_identical_output() -> None:
    first = await _run_team()
    second = await _run_team()
    for name in TEAM:
        assert first[name].model_dump_json() == second[name].model_dump_json(), name


async def test_outputs_are_labelled_offline_with_zero_usage() -> None:
    notes: list[str] = []
    output = await _run(_request("requirements_analyst"), notes)
    assert (output.provider, output.model) == ("offline", "offline")
    assert (output.usage.input_tokens, output.usage.output_tokens) == (0, 0)
    assert "offline" in output.summary.lower()
    assert notes
    assert all("offline" in note for note in notes)


async def test_every_path_is_a_normalised_artifact_path() -> None:
    for name, output in (await _run_team()).items():
        assert output.files, name
        for file in output.files:
            assert normalize_artifact_path(file.path) == file.path


async def test_no_two_personas_write_the_same_path() -> None:
    owners: dict[str, str] = {}
    for name, output in (await _run_team()).items():
        for file in output.files:
            assert file.path not in owners, f"{file.path}: {owners.get(file.path)} and {name}"
            owners[file.path] = name
    assert len(owners) >= 20


@pytest.mark.parametrize("name", list(TEAM))
async def test_each_persona_writes_its_deliverables(name: str) -> None:
    output = (await _run_team())[name]
    paths = [f.path for f in output.files]
    for deliverable in PERSONAS[name].deliverables:
        if deliverable.path.endswith("/"):
            assert any(p.startswith(deliverable.path) for p in paths), deliverable.path
        else:
            assert deliverable.path in paths


async def test_requirements_are_derived_from_the_requirement_text() -> None:
    doc = _files(await _run(_request("requirements_analyst")))["docs/requirements.md"]
    assert "### FR-1: Build an invoice tracker for a small business" in doc
    assert "### FR-2: Staff record invoices with a customer and an amount" in doc
    assert "AC-2.1" in doc
    assert "The central record is the invoice" in doc


async def test_code_uses_the_requirement_s_resource_and_is_valid_python() -> None:
    outputs = await _run_team()
    backend = _files(outputs["backend_developer"])
    assert 'RESOURCE = "invoices"' in backend["app/__init__.py"]
    assert 'RESOURCE = "invoices"' in _files(outputs["frontend_developer"])["frontend/__init__.py"]
    for output in outputs.values():
        for file in output.files:
            if file.path.endswith(".py"):
                ast.parse(file.content, filename=file.path)


async def test_awkward_requirement_text_still_gives_valid_files() -> None:
    awkward = 'Track "quotes" \\ and \'\'\' and """ in names \u2603 \U0001f600\x07 wisely'
    outputs = await _run_team(awkward)
    for output in outputs.values():
        for file in output.files:
            if file.path.endswith(".py"):
                ast.parse(file.content, filename=file.path)
    pyproject = tomllib.loads(_files(outputs["backend_developer"])["pyproject.toml"])
    assert "\u2603" in pyproject["project"]["description"]
    alone = _files(await _run(_request("devops_engineer", requirement=awkward)))
    assert "\u2603" in tomllib.loads(alone["pyproject.toml"])["project"]["description"]


async def test_qa_without_code_writes_only_the_plan() -> None:
    output = await _run(_request("qa_engineer"))
    assert [f.path for f in output.files] == ["docs/test-plan.md"]
    assert "manual" in output.files[0].content


async def test_qa_tests_only_the_interfaces_it_was_given() -> None:
    foreign = DependencyContext(
        step_id="backend",
        persona="backend_developer",
        summary="Another backend.",
        files=(
            TextFile(path="app/__init__.py", content=""),
            TextFile(path="app/__main__.py", content="raise SystemExit(0)\n"),
            TextFile(path="app/core.py", content="def answer() -> int:\n    return 42\n"),
        ),
    )
    files = _files(await _run(_request("qa_engineer", (foreign,))))
    tests = files["tests/test_acceptance.py"]
    assert 'MODULES = ["app", "app.core"]' in tests
    assert "app.store" not in tests
    assert "frontend" not in tests


async def test_test_plan_claims_automation_only_for_what_the_tests_cover() -> None:
    plan = _files((await _run_team())["qa_engineer"])["docs/test-plan.md"]
    crud = "Invoices can be created, listed, read, updated and deleted"
    assert f"{crud}. Checked: automated" in plan
    assert "Staff record invoices with a customer and an amount. Checked: manual" in plan


async def test_backend_owns_the_project_file_and_devops_keeps_it() -> None:
    outputs = await _run_team()
    project = tomllib.loads(_files(outputs["backend_developer"])["pyproject.toml"])
    assert project["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    assert project["tool"]["setuptools"]["packages"]["find"]["exclude"] == ["tests*", "docs*"]
    files = _files(outputs["devops_engineer"])
    # One writer per path: devops builds on the backend's pyproject.toml.
    assert "pyproject.toml" not in files
    assert "keeping the project's pyproject.toml" in outputs["devops_engineer"].summary
    alone = tomllib.loads(_files(await _run(_request("devops_engineer")))["pyproject.toml"])
    assert alone["tool"]["setuptools"]["packages"] == ["app", "frontend"]
    assert alone["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    assert "COPY app/ app/" in files["Dockerfile"]
    assert "USER service" in files["Dockerfile"]
    assert "python -m pytest -q" in files[".ci/run"]


async def test_reviews_reference_the_files_they_were_given() -> None:
    risky = DependencyContext(
        step_id="backend",
        persona="backend_developer",
        summary="Quick hack.",
        files=(
            TextFile(
                path="svc/__init__.py",
                content='API_KEY = "sk-live-1234"\n\ndef run(x):\n    try:\n'
                "        return eval(x)\n    except:\n        return None\n",
            ),
        ),
    )
    security = _files(await _run(_request("security_reviewer", (risky,))))
    review = security["docs/security-review.md"]
    assert "| `svc/__init__.py` | 7 |" in review
    assert "[high] `svc/__init__.py:1`: a hard-coded secret" in review
    assert "[high] `svc/__init__.py:5`: dynamic code execution" in review

    code = _files(await _run(_request("code_reviewer", (risky,))))["docs/code-review.md"]
    assert "[high] `svc/__init__.py:6`: bare except" in code
    assert "[high] `svc/`: no test in the files given imports it" in code
    assert "Changes requested" in code


async def test_team_reviews_count_the_delivered_files() -> None:
    outputs = await _run_team()
    review = _files(outputs["code_reviewer"])["docs/code-review.md"]
    for path in ("app/server.py", "frontend/client.py", "tests/test_acceptance.py"):
        assert f"`{path}`" in review
    # A template makes no merge decision, and says what it is.
    assert "Ready to merge" not in review
    assert "makes no merge decision" in review
    assert "labelled template demo" in review
    readme = _files(outputs["technical_writer"])["README.md"]
    assert "python -m app --port 8000" in readme
    assert "`frontend/cli.py`" in readme


async def test_unknown_persona_is_refused() -> None:
    stranger = Persona(
        name="astrologer",
        role="astrologer",
        system_prompt="Read the stars.",
        deliverables=(
            Deliverable(path="stars.md", kind=DeliverableKind.DOCUMENT, description="x"),
        ),
    )
    with pytest.raises(UnknownPersona):
        await OfflineProvider().run(
            _request("requirements_analyst"), stranger, timeout=1.0, progress=lambda _: None
        )

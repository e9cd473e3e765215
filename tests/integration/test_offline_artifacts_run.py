"""The offline provider's artifacts of a whole run form one tree whose tests pass.

Each step gets its dependencies' outputs as context, like the scheduler gives them;
the files are written into one directory and `python -m pytest -q` runs there in a
subprocess (asyncio, with a deadline). The directory sits inside an enclosing project
whose configuration and conftest would break any test run that climbed out of the tree,
as `maestro-out/<run>/` sits inside the user's project.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from maestro.paths import normalize_artifact_path
from maestro.personas import PERSONAS
from persona_service.models import DependencyContext, StepOutput, StepRequest
from persona_service.offline import OfflineProvider

REQUIREMENT = (
    "Build a to-do service for a small team. Members add tasks with a short title, "
    "mark tasks as done and remove tasks they no longer need.\n"
    "- A web page shows every task and how many are done"
)

# The sdlc chain (direct dependencies): analyst -> architect -> backend and frontend ->
# QA -> code review. Like the scheduler, each step is given all of its ancestors.
SDLC: dict[str, tuple[str, ...]] = {
    "requirements_analyst": (),
    "solution_architect": ("requirements_analyst",),
    "backend_developer": ("solution_architect",),
    "frontend_developer": ("solution_architect",),
    "qa_engineer": ("backend_developer", "frontend_developer"),
    "code_reviewer": ("qa_engineer",),
}
# The rest of the team on top, so pyproject.toml, Dockerfile and README join the tree.
FULL_TEAM: dict[str, tuple[str, ...]] = {
    **SDLC,
    "devops_engineer": ("backend_developer", "frontend_developer"),
    "security_reviewer": ("devops_engineer",),
    "technical_writer": ("code_reviewer", "security_reviewer"),
}
PYTEST_DEADLINE_SECONDS = 90.0


def ancestors(chain: dict[str, tuple[str, ...]], name: str) -> list[str]:
    """Every step `name` builds on, nearest first, as the scheduler passes them."""
    order: list[str] = []
    frontier = list(chain[name])
    while frontier:
        order += [step for step in frontier if step not in order]
        frontier = [dep for step in frontier for dep in chain[step] if dep not in order]
    return order


async def run_chain(chain: dict[str, tuple[str, ...]]) -> dict[str, StepOutput]:
    provider = OfflineProvider()
    outputs: dict[str, StepOutput] = {}
    for name in chain:
        request = StepRequest(
            run_id="run-offline",
            step_id=name,
            attempt=1,
            persona=name,
            requirement=REQUIREMENT,
            dependencies=tuple(
                DependencyContext(
                    step_id=dep, persona=dep, summary=outputs[dep].summary, files=outputs[dep].files
                )
                for dep in ancestors(chain, name)
            ),
        )
        notes: list[str] = []
        outputs[name] = await provider.run(
            request, PERSONAS[name], timeout=10.0, progress=notes.append
        )
        assert notes, name
    return outputs


def _enclosing_project(tmp_path: Path) -> Path:
    """A project around the output tree that fails any pytest run that reaches it."""
    outer = tmp_path / "enclosing"
    outer.mkdir()
    (outer / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\ntestpaths = ["no-such-dir"]\naddopts = "--no-such-option"\n'
    )
    (outer / "conftest.py").write_text("raise RuntimeError('climbed out of the tree')\n")
    tree = outer / "maestro-out" / "run-offline"
    tree.mkdir(parents=True)
    return tree


def _write_tree(root: Path, outputs: dict[str, StepOutput]) -> list[str]:
    written: list[str] = []
    for output in outputs.values():
        for file in output.files:
            path = root / normalize_artifact_path(file.path)
            assert not path.exists(), f"{file.path} written twice"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(file.content, encoding="utf-8")
            written.append(file.path)
    return written


async def _pytest_in(root: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        cwd=root,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), PYTEST_DEADLINE_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode("utf-8", "replace")


def _passed(output: str) -> int:
    match = re.search(r"(\d+) passed", output)
    return int(match.group(1)) if match else 0


async def test_sdlc_chain_artifacts_pass_their_own_tests(tmp_path: Path) -> None:
    outputs = await run_chain(SDLC)
    tree = _enclosing_project(tmp_path)
    written = _write_tree(tree, outputs)
    assert {"app/server.py", "frontend/client.py", "tests/test_acceptance.py"} <= set(written)
    assert "pyproject.toml" in written

    code, output = await _pytest_in(tree)

    assert code == 0, output
    assert "failed" not in output
    assert not re.search(r"\d+ errors?\b", output), output
    # Backend, frontend and acceptance tests all ran.
    assert _passed(output) >= 15, output
    review = (tree / "docs/code-review.md").read_text()
    assert "`app/server.py`" in review
    assert "Ready to merge" not in review


async def test_full_team_tree_with_packaging_still_passes(tmp_path: Path) -> None:
    outputs = await run_chain(FULL_TEAM)
    tree = _enclosing_project(tmp_path)
    written = _write_tree(tree, outputs)
    assert {"pyproject.toml", "Dockerfile", ".ci/run", "README.md"} <= set(written)

    code, output = await _pytest_in(tree)

    assert code == 0, output
    assert "failed" not in output
    assert _passed(output) >= 15, output

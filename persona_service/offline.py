"""The offline provider: real, deterministic files for every persona, with no model.

It lets a whole run work without an API key (development, CI, a declared fallback),
and its results are always labelled provider="offline", model="offline". Same request,
byte-identical output: everything is derived from the requirement text and the
dependency files, never from clocks, randomness or the network. Each persona writes
paths no other persona writes, so a run's artifacts form one tree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from maestro.paths import BadPath, check_file_size, normalize_artifact_path
from maestro.personas import Persona
from persona_service.call_admission import CallAdmission
from persona_service.models import (
    FailureKind,
    ProgressCallback,
    StepFailed,
    StepOutput,
    StepRequest,
    TextFile,
    TokenUsage,
    UnknownPersona,
)
from persona_service.offline_context import Context, build_context
from persona_service.offline_docs import (
    architecture_doc,
    decisions_doc,
    delivered_modules,
    readme,
    requirement_ids,
    requirements_doc,
    test_plan_doc,
)
from persona_service.offline_frontend import frontend_files
from persona_service.offline_review import code_review, security_review
from persona_service.offline_templates import (
    BACKEND_MARKERS,
    FRONTEND_MARKERS,
    backend_files,
    devops_files,
    has_markers,
    project_file,
)
from persona_service.offline_tests import acceptance_tests, backend_tests, frontend_tests
from persona_service.usage import UsageMeter

log = logging.getLogger(__name__)

OFFLINE_MODEL = "offline"

Written = tuple[dict[str, str], str]
"""The files a persona writes (path -> text) and a one-line summary."""


def _requirements_analyst(ctx: Context) -> Written:
    count = len(requirement_ids(ctx))
    return (
        {"docs/requirements.md": requirements_doc(ctx)},
        f"{count} functional and 3 non-functional requirements with acceptance criteria; "
        f"the central record is the {ctx.noun}.",
    )


def _solution_architect(ctx: Context) -> Written:
    source = "docs/requirements.md" if ctx.file("docs/requirements.md") else "the requirement"
    return (
        {"docs/architecture.md": architecture_doc(ctx), "docs/decisions.md": decisions_doc(ctx)},
        f"An in-memory {ctx.noun} store behind a JSON-over-HTTP API at /{ctx.resource}, "
        f"a separate client package, and 3 decision records; traced to {source}.",
    )


def _backend_developer(ctx: Context) -> Written:
    files = backend_files(ctx)
    files["tests/test_backend.py"] = backend_tests(ctx)
    files["pyproject.toml"] = project_file(ctx)
    return (
        files,
        f"The app package: a thread-safe {ctx.noun} store and a JSON API at /{ctx.resource} "
        "on http.server (standard library only), with store and HTTP tests, and the "
        "project's pyproject.toml (python -m pytest runs from its root).",
    )


def _frontend_developer(ctx: Context) -> Written:
    files = frontend_files(ctx)
    files["tests/test_frontend.py"] = frontend_tests(ctx)
    return (
        files,
        f"The frontend package: an HTTP client of /{ctx.resource}, an escaping HTML "
        "renderer and a CLI, tested against a stub of the HTTP contract.",
    )


def _qa_engineer(ctx: Context) -> Written:
    modules = delivered_modules(ctx)
    backend = has_markers(ctx, BACKEND_MARKERS)
    frontend = backend and has_markers(ctx, FRONTEND_MARKERS)
    tests: list[tuple[str, str]] = []
    if modules:
        tests.append(("test_delivered_module_imports", f"each of {len(modules)} modules imports"))
        tests.append(("test_delivered_module_compiles", "each module compiles"))
    if backend:
        tests.append(
            (
                "test_backend_keeps_records_and_rejects_invalid_input",
                "the store keeps valid records and refuses invalid ones",
            )
        )
    if frontend:
        tests.append(("test_client_drives_the_backend_end_to_end", "client and server agree"))
        tests.append(("test_backend_rejects_invalid_input_over_http", "400 through the client"))
    files = {"docs/test-plan.md": test_plan_doc(ctx, tests, crud_tested=backend)}
    if modules:
        files["tests/test_acceptance.py"] = acceptance_tests(
            ctx, modules, backend=backend, frontend=frontend
        )
        what = f"{len(tests)} acceptance tests over {len(modules)} delivered modules"
    else:
        what = "no code was delivered, so only a manual plan"
    return files, f"A test plan mapped to the requirements and {what}."


def _devops_engineer(ctx: Context) -> Written:
    # Without delivered code, follow the layout the architecture prescribes.
    packages = ctx.packages or ("app", "frontend")
    files = devops_files(ctx, packages)
    if ctx.file("pyproject.toml") is not None:
        # The project's own pyproject.toml (the backend's) stays the one; rewriting a
        # path another step wrote would make two versions of it.
        del files["pyproject.toml"]
        made = "a non-root Dockerfile and .ci/run (keeping the project's pyproject.toml)"
    else:
        made = "pyproject.toml, a non-root Dockerfile and .ci/run"
    return (
        files,
        f"{made} for {', '.join(packages)}; CI compiles everything and runs python -m pytest -q.",
    )


def _security_reviewer(ctx: Context) -> Written:
    text, findings = security_review(ctx)
    high = sum(1 for f in findings if f.severity == "high")
    return (
        {"docs/security-review.md": text},
        f"Reviewed {len(ctx.files)} files: {len(findings)} findings ({high} high).",
    )


def _code_reviewer(ctx: Context) -> Written:
    text, findings, clean = code_review(ctx)
    verdict = (
        "no blocking findings (a template review: no merge decision)"
        if clean
        else ("changes requested")
    )
    return (
        {"docs/code-review.md": text},
        f"Reviewed {len(ctx.files)} files: {len(findings)} findings; {verdict}.",
    )


def _technical_writer(ctx: Context) -> Written:
    return (
        {"README.md": readme(ctx)},
        f"README with features, run, CLI and test instructions over {len(ctx.files)} files.",
    )


WRITERS: dict[str, Callable[[Context], Written]] = {
    "requirements_analyst": _requirements_analyst,
    "solution_architect": _solution_architect,
    "backend_developer": _backend_developer,
    "frontend_developer": _frontend_developer,
    "qa_engineer": _qa_engineer,
    "devops_engineer": _devops_engineer,
    "security_reviewer": _security_reviewer,
    "code_reviewer": _code_reviewer,
    "technical_writer": _technical_writer,
}
"""What each persona writes offline, by persona name."""


def _checked(files: dict[str, str]) -> tuple[TextFile, ...]:
    # Templates are ours, but the same rules as for model output keep them honest.
    out = []
    for raw in sorted(files):
        try:
            path = normalize_artifact_path(raw)
            check_file_size(path, len(files[raw].encode("utf-8")))
        except BadPath as err:
            raise StepFailed(
                FailureKind.FATAL, "bad_output", f"offline template produced a bad file: {err}"
            ) from None
        out.append(TextFile(path=path, content=files[raw]))
    return tuple(out)


class OfflineProvider:
    """Writes each persona's deliverables from templates; no network, no waiting."""

    name: str = "offline"

    async def aclose(self) -> None:
        """Nothing to release: the offline provider holds no connections."""

    async def run(
        self,
        request: StepRequest,
        persona: Persona,
        *,
        timeout: float,  # noqa: ASYNC109 - the Provider protocol's explicit budget
        progress: ProgressCallback,
        meter: UsageMeter | None = None,
        admission: CallAdmission | None = None,
    ) -> StepOutput:
        """Produces the persona's files for the request.

        Args:
            request: The step attempt.
            persona: The persona to write for.
            timeout: Unused: the work is a few milliseconds of string building.
            progress: Receives a note before and after.
            meter: Unused: no model is called, so nothing is spent.

        Raises:
            UnknownPersona: the persona has no offline templates.
        """
        writer = WRITERS.get(persona.name)
        if writer is None:
            raise UnknownPersona(persona.name)
        progress(f"offline provider writing the {persona.role}'s files (no model is called)")
        ctx = build_context(request)
        written, summary = writer(ctx)
        files = _checked(written)
        log.debug("offline step %s wrote %s", request.step_id, [f.path for f in files])
        progress(f"offline provider wrote {len(files)} file{'' if len(files) == 1 else 's'}")
        return StepOutput(
            summary=f"Produced offline by templates (no model was called). {summary}",
            files=files,
            usage=TokenUsage(),
            provider=self.name,
            model=OFFLINE_MODEL,
        )

"""The user message of a step: what the persona is asked to do, and with what.

Pure functions of the StepRequest and the Persona, so the same step always gets the
same prompt. The context is exactly what the scheduler chose for the step (dependency
summaries, the files within its byte budget, the paths it left out); nothing here
reaches for more.
"""

from __future__ import annotations

import posixpath

from maestro.personas import Deliverable, Persona
from persona_service.models import DependencyContext, StepRequest

SUBMIT_TOOL_NAME = "submit_step_result"
"""The one tool a persona answers through (see persona_service.llm)."""

_LANGUAGES = {
    ".py": "python",
    ".md": "markdown",
    ".toml": "toml",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".html": "html",
    ".js": "javascript",
    ".ts": "typescript",
    ".css": "css",
    ".sh": "bash",
    ".sql": "sql",
    ".txt": "text",
}


def language_hint(path: str) -> str:
    """Returns the code-fence language for a path, or "" when unknown.

    Args:
        path: A relative artifact path.
    """
    name = posixpath.basename(path)
    if name == "Dockerfile":
        return "dockerfile"
    return _LANGUAGES.get(posixpath.splitext(name)[1].lower(), "")


def fence(path: str, content: str) -> str:
    """Renders a file as a fenced block headed by its path.

    The fence is one backtick longer than the longest backtick run in the content,
    so a file that itself contains fences (a README, say) cannot end the block early.

    Args:
        path: The file's relative path.
        content: The file's text.
    """
    longest = run = 0
    for ch in content:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    ticks = "`" * max(3, longest + 1)
    body = content if content.endswith("\n") or not content else content + "\n"
    return f"File `{path}`:\n{ticks}{language_hint(path)}\n{body}{ticks}"


def render_deliverable(deliverable: Deliverable) -> str:
    """Renders one deliverable as a bullet line.

    A path ending in "/" is a directory: the persona chooses the file names in it.
    """
    where = (
        f"`{deliverable.path}` (a directory: put your {deliverable.kind} files under it)"
        if deliverable.path.endswith("/")
        else f"`{deliverable.path}` ({deliverable.kind})"
    )
    return f"- {where}: {deliverable.description}"


def render_dependency(dependency: DependencyContext) -> str:
    """Renders what one upstream step produced: its summary, files and omitted paths."""
    parts = [f"## Step `{dependency.step_id}` ({dependency.persona})", ""]
    parts.append("Summary:")
    parts.append(dependency.summary.strip() or "(no summary)")
    for file in dependency.files:
        parts.extend(["", fence(file.path, file.content)])
    if dependency.omitted_paths:
        parts.extend(
            [
                "",
                "Also produced, but left out to keep this prompt within its budget "
                "(they exist; do not rewrite them unless your task requires it):",
            ]
        )
        parts.extend(f"- `{path}`" for path in dependency.omitted_paths)
    return "\n".join(parts)


def build_user_message(request: StepRequest, persona: Persona) -> str:
    """Builds the user message for one step attempt.

    Args:
        request: The step attempt: requirement, instructions and chosen dependency context.
        persona: The persona that runs the step (its deliverables are listed).

    Returns:
        The message text. It never contains anything but the request and persona.
    """
    sections = ["# Requirement", "", request.requirement.strip()]

    sections.extend(["", f"# Your task as {persona.role} (step `{request.step_id}`)", ""])
    sections.append(
        request.instructions.strip()
        or "Produce your deliverables for the requirement, building on the earlier steps."
    )
    if request.attempt > 1:
        # Earlier attempts failed (bad output, timeout); say so, so the model is careful
        # about the completeness and format of its answer.
        sections.extend(
            [
                "",
                f"This is attempt {request.attempt}; an earlier attempt did not produce "
                "a usable result. Return complete files through the tool.",
            ]
        )

    sections.extend(["", "# Deliverables", ""])
    sections.extend(render_deliverable(d) for d in persona.deliverables)

    sections.extend(["", "# Work from earlier steps", ""])
    if request.dependencies:
        sections.append(
            "\n\n".join(render_dependency(dependency) for dependency in request.dependencies)
        )
    else:
        sections.append("None: this step starts from the requirement alone.")

    sections.extend(
        [
            "",
            "# How to answer",
            "",
            f"Call the `{SUBMIT_TOOL_NAME}` tool exactly once with:",
            "- `summary`: a few sentences on what you produced and the decisions you made;",
            "- `files`: every file you write, each with a relative `path` ('/' separators, "
            "no leading '/', no '..') and its complete `content`.",
            "Do not resend files from earlier steps unless you changed them; a path you "
            "send belongs to this step.",
        ]
    )
    return "\n".join(sections) + "\n"

"""What a step starts from, and which of it goes into the prompt.

The workspace is the run's artifact tree as the step starts (or, from a scheduler that
sends none, the files of the step's dependencies). The prompt shows what the persona
needs (its `context` patterns, most important first) within a byte budget; whatever
does not fit is named, never silently dropped, and code personas can read it with
read_file. The shared documents (requirements, architecture, decisions) are shown in
one fixed order before anything step-specific, so prompts of different steps share a
prefix the prompt cache can reuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from maestro.personas import SHARED_DOCUMENTS, Persona
from persona_service.models import StepRequest, TextFile


@dataclass(frozen=True)
class StartingPoint:
    """The workspace as the step starts."""

    files: dict[str, str]
    """Path -> text of every file the worker has."""
    unseen: tuple[str, ...]
    """Paths of the run the worker was not sent."""


@dataclass(frozen=True)
class Context:
    """The files a prompt shows, and the ones it only names."""

    shared: tuple[TextFile, ...]
    """Shared documents, in SHARED_DOCUMENTS order."""
    files: tuple[TextFile, ...]
    """Other files the persona needs, most important first."""
    left_out: tuple[str, ...]
    """Paths in the run that the prompt does not show."""


def starting_point(request: StepRequest) -> StartingPoint:
    """The request's workspace, or its dependencies' files when it carries none."""
    if request.workspace:
        files = {f.path: f.content for f in request.workspace}
        return StartingPoint(files, tuple(sorted(set(request.workspace_omitted) - set(files))))
    files = {}
    unseen: set[str] = set()
    for dependency in reversed(request.dependencies):  # nearest last, so nearest wins
        files.update({f.path: f.content for f in dependency.files})
        unseen.update(dependency.omitted_paths)
    return StartingPoint(files, tuple(sorted(unseen - set(files))))


def _matches(pattern: str, path: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("/"):
        return path.startswith(pattern)
    return path == pattern or path.startswith(pattern)


def _ranked(persona: Persona, paths: list[str]) -> list[str]:
    """The paths the persona needs, in the order of its context patterns."""
    ranked: list[str] = []
    seen: set[str] = set()
    for pattern in persona.context:
        for path in sorted(paths, key=_shared_first):
            if path not in seen and _matches(pattern, path):
                seen.add(path)
                ranked.append(path)
    return ranked


def _shared_first(path: str) -> tuple[int, str]:
    rank = SHARED_DOCUMENTS.index(path) if path in SHARED_DOCUMENTS else len(SHARED_DOCUMENTS)
    return rank, path


def choose_context(persona: Persona, start: StartingPoint, budget_bytes: int) -> Context:
    """Fits what the persona needs into `budget_bytes`, most important first.

    A file that does not fit is left out (and named) while smaller, later files may
    still fit.
    """
    remaining = budget_bytes
    chosen: list[str] = []
    for path in _ranked(persona, list(start.files)):
        size = len(start.files[path].encode())
        if size <= remaining:
            chosen.append(path)
            remaining -= size
    shown = set(chosen)
    shared = tuple(TextFile(path=p, content=start.files[p]) for p in SHARED_DOCUMENTS if p in shown)
    others = tuple(
        TextFile(path=p, content=start.files[p]) for p in chosen if p not in SHARED_DOCUMENTS
    )
    left_out = tuple(sorted((set(start.files) - shown) | set(start.unseen)))
    return Context(shared=shared, files=others, left_out=left_out)

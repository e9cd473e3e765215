"""The one registry of personas: who they are, how they work and what each must deliver.

Workflows are validated against this registry before anything runs, and workers
build their prompts from it. Nothing is looked up by substring.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict


class DeliverableKind(StrEnum):
    DOCUMENT = "document"
    CODE = "code"
    TESTS = "tests"
    CONFIG = "config"


class PersonaMode(StrEnum):
    """How a persona executes a step (a request may override it).

    DOCUMENT: one model call answered with typed structured output, from which the
    worker renders the persona's document files. CODE: a bounded agent loop with
    file tools over the run's workspace; the result is what the step changed.
    """

    DOCUMENT = "document"
    CODE = "code"


class Deliverable(BaseModel):
    """A file a persona is expected to write; a path ending in "/" is a directory in
    which the persona chooses the file names."""

    model_config = ConfigDict(frozen=True)

    path: str
    kind: DeliverableKind
    description: str


class Persona(BaseModel):
    """An AI persona: its role, how it works, what it reads and what it delivers.

    Attributes:
        name: The registry name workflows use.
        role: A short human name ("backend developer").
        system_prompt: Who the persona is and what it focuses on.
        deliverables: The files (or directories) it must write.
        mode: How it executes a step by default.
        context: The workspace paths it needs to see, most important first; a path
            ending in "/" means everything under it, "*" everything else. What does
            not fit the context budget is named in the prompt instead.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    role: str
    system_prompt: str
    deliverables: tuple[Deliverable, ...]
    mode: PersonaMode = PersonaMode.DOCUMENT
    context: tuple[str, ...] = ()


SHARED_DOCUMENTS = ("docs/requirements.md", "docs/architecture.md", "docs/decisions.md")
"""Documents most steps read, in the order every prompt shows them (so that prompts of
different steps share a prefix the model's prompt cache can reuse)."""


def _persona(
    name: str,
    role: str,
    focus: str,
    deliverables: list[tuple[str, DeliverableKind, str]],
    *,
    mode: PersonaMode,
    context: tuple[str, ...],
) -> Persona:
    prompt = (
        f"You are the {role} on a small software team. {focus} "
        "Work from the requirement and the outputs of the steps before you. "
        "Write complete, working files, not outlines or placeholders. "
        "Paths are relative to the project root, which every role shares: write only "
        "your own deliverables, and keep Python runnable from that root with "
        "`python -m pytest -q` (no conftest.py, no sys.path edits)."
    )
    return Persona(
        name=name,
        role=role,
        system_prompt=prompt,
        deliverables=tuple(Deliverable(path=p, kind=k, description=d) for p, k, d in deliverables),
        mode=mode,
        context=context,
    )


D, C, T, F = (
    DeliverableKind.DOCUMENT,
    DeliverableKind.CODE,
    DeliverableKind.TESTS,
    DeliverableKind.CONFIG,
)
DOC, CODE = PersonaMode.DOCUMENT, PersonaMode.CODE
_DESIGN = SHARED_DOCUMENTS
_EVERYTHING = (*SHARED_DOCUMENTS, "*")

_ALL = [
    _persona(
        "requirements_analyst",
        "requirements analyst",
        "Turn the request into numbered functional and non-functional requirements with "
        "acceptance criteria a tester can check; list open questions and assumptions.",
        [("docs/requirements.md", D, "numbered requirements with acceptance criteria")],
        mode=DOC,
        context=("docs/",),
    ),
    _persona(
        "solution_architect",
        "solution architect",
        "Design the smallest architecture that meets the requirements: components, data "
        "model, the interfaces each side must implement, and the decisions with their "
        "trade-offs.",
        [
            ("docs/architecture.md", D, "components, data model and interfaces"),
            ("docs/decisions.md", D, "architecture decision records"),
        ],
        mode=DOC,
        context=("docs/",),
    ),
    _persona(
        "backend_developer",
        "backend developer",
        "Implement the server side as a small Python package with its own pytest tests; "
        "standard library only unless the design demands more.",
        [
            ("app/", C, "the backend Python package"),
            ("tests/", T, "pytest tests for the backend, in files named tests/test_backend*.py"),
            (
                "pyproject.toml",
                F,
                "the project's packaging and its pytest configuration "
                "([tool.pytest.ini_options] with testpaths), at the project root",
            ),
        ],
        mode=CODE,
        context=(*_DESIGN, "app/", "tests/test_backend"),
    ),
    _persona(
        "frontend_developer",
        "frontend developer",
        "Implement the user-facing client of the design as a small Python package with "
        "its own pytest tests.",
        [
            ("frontend/", C, "the client package"),
            ("tests/", T, "pytest tests for the client, in files named tests/test_frontend*.py"),
        ],
        mode=CODE,
        context=(*_DESIGN, "frontend/", "tests/test_frontend"),
    ),
    _persona(
        "qa_engineer",
        "QA engineer",
        "Write a test plan tied to the acceptance criteria and pytest tests that exercise "
        "the implemented code through its public interface.",
        [
            ("docs/test-plan.md", D, "test plan mapped to acceptance criteria"),
            ("tests/", T, "acceptance tests, in files named tests/test_acceptance*.py"),
        ],
        mode=CODE,
        context=_EVERYTHING,
    ),
    _persona(
        "devops_engineer",
        "devops engineer",
        "Make the code build, test and run the same way everywhere: CI and a container "
        "or deployment description, using the project's pyproject.toml (the backend "
        "developer writes it).",
        [
            ("Dockerfile", F, "container image"),
            (".ci/run", F, "the CI script"),
        ],
        mode=CODE,
        context=_EVERYTHING,
    ),
    _persona(
        "security_reviewer",
        "security reviewer",
        "Review the design and code for security flaws (authentication, input handling, "
        "secrets, injection) and rate each finding with a concrete fix.",
        [("docs/security-review.md", D, "findings with severity and fixes")],
        mode=DOC,
        context=_EVERYTHING,
    ),
    _persona(
        "code_reviewer",
        "code reviewer",
        "Review the code for correctness, clarity and test coverage; list concrete "
        "findings with file and line, and say whether it is ready to merge.",
        [("docs/code-review.md", D, "review findings and verdict")],
        mode=DOC,
        context=_EVERYTHING,
    ),
    _persona(
        "technical_writer",
        "technical writer",
        "Write the user-facing documentation: what it does, how to install, run and use "
        "it, with examples that match the code.",
        [("README.md", D, "user documentation")],
        mode=DOC,
        context=_EVERYTHING,
    ),
]

PERSONAS: Mapping[str, Persona] = MappingProxyType({p.name: p for p in _ALL})


def get_persona(name: str) -> Persona | None:
    """Returns the persona registered under exactly this name, or None."""
    return PERSONAS.get(name)

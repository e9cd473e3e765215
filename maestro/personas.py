"""The one registry of personas: who they are and what each must deliver.

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


class Deliverable(BaseModel):
    """A file a persona is expected to write."""

    model_config = ConfigDict(frozen=True)

    path: str
    kind: DeliverableKind
    description: str


class Persona(BaseModel):
    """An AI persona: its role, its system prompt and its deliverables."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: str
    system_prompt: str
    deliverables: tuple[Deliverable, ...]


def _persona(
    name: str, role: str, focus: str, deliverables: list[tuple[str, DeliverableKind, str]]
) -> Persona:
    prompt = (
        f"You are the {role} on a small software team. {focus} "
        "Work from the requirement and the outputs of the steps before you. "
        "Write complete, working files, not outlines or placeholders. "
        "Paths are relative to the project root, which every role shares: write only "
        "your own deliverables, and keep Python runnable from that root with "
        "`python -m pytest -q` (no conftest.py, no sys.path edits). "
        "Return your work through the submit_step_result tool: a short summary of what "
        "you produced and decided, and every file with a relative path."
    )
    return Persona(
        name=name,
        role=role,
        system_prompt=prompt,
        deliverables=tuple(Deliverable(path=p, kind=k, description=d) for p, k, d in deliverables),
    )


D, C, T, F = (
    DeliverableKind.DOCUMENT,
    DeliverableKind.CODE,
    DeliverableKind.TESTS,
    DeliverableKind.CONFIG,
)

_ALL = [
    _persona(
        "requirements_analyst",
        "requirements analyst",
        "Turn the request into numbered functional and non-functional requirements with "
        "acceptance criteria a tester can check; list open questions and assumptions.",
        [("docs/requirements.md", D, "numbered requirements with acceptance criteria")],
    ),
    _persona(
        "solution_architect",
        "solution architect",
        "Design the smallest architecture that meets the requirements: components, data "
        "model, interfaces, and the decisions with their trade-offs.",
        [
            ("docs/architecture.md", D, "components, data model and interfaces"),
            ("docs/decisions.md", D, "architecture decision records"),
        ],
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
    ),
    _persona(
        "security_reviewer",
        "security reviewer",
        "Review the design and code for security flaws (authentication, input handling, "
        "secrets, injection) and rate each finding with a concrete fix.",
        [("docs/security-review.md", D, "findings with severity and fixes")],
    ),
    _persona(
        "code_reviewer",
        "code reviewer",
        "Review the code for correctness, clarity and test coverage; list concrete "
        "findings with file and line, and say whether it is ready to merge.",
        [("docs/code-review.md", D, "review findings and verdict")],
    ),
    _persona(
        "technical_writer",
        "technical writer",
        "Write the user-facing documentation: what it does, how to install, run and use "
        "it, with examples that match the code.",
        [("README.md", D, "user documentation")],
    ),
]

PERSONAS: Mapping[str, Persona] = MappingProxyType({p.name: p for p in _ALL})


def get_persona(name: str) -> Persona | None:
    """Returns the persona registered under exactly this name, or None."""
    return PERSONAS.get(name)

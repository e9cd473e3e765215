"""Typed answers of document personas, and the documents rendered from them.

Each document persona answers with structured output whose JSON schema is generated
from a pydantic model here (and made API-ready by the SDK's `transform_schema`); the
answer is validated with the same model, then rendered to the persona's declared
files. A persona without a typed answer (a code persona run in document mode, say)
answers with the generic shape: a summary and its files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Self

import anthropic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from maestro.personas import Persona
from persona_service.models import Verdict


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Requirements


class Requirement(_Answer):
    id: str = Field(description="Stable id: FR-1, FR-2, ... or NFR-1, ...")
    kind: Literal["functional", "non_functional"]
    title: str
    statement: str = Field(description="What must be true, in one or two sentences.")
    concerns: list[str] = Field(
        description="Which parts it concerns, e.g. 'backend', 'client', 'cli', 'library'."
    )
    priority: Literal["must", "should", "could"]
    acceptance_criteria: list[str] = Field(
        min_length=1, description="Checks a tester can run, each one observable."
    )


class RequirementsAnswer(_Answer):
    summary: str = Field(description="Two or three sentences for the team.")
    title: str
    overview: str = Field(description="What is being built, for whom, and its scope.")
    requirements: list[Requirement] = Field(min_length=1)
    assumptions: list[str]
    open_questions: list[str]

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        ids = [r.id for r in self.requirements]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"requirement ids repeat: {', '.join(dupes)}")
        return self


def _requirements_doc(answer: RequirementsAnswer) -> str:
    out = [f"# Requirements: {answer.title}", "", answer.overview.strip(), ""]
    for kind, heading in (("functional", "Functional"), ("non_functional", "Non-functional")):
        chosen = [r for r in answer.requirements if r.kind == kind]
        if not chosen:
            continue
        out += [f"## {heading} requirements", ""]
        for r in chosen:
            concerns = ", ".join(r.concerns) or "all"
            out += [f"### {r.id}: {r.title}", "", f"{r.statement.strip()}", ""]
            out += [f"Priority: {r.priority}. Concerns: {concerns}.", "", "Acceptance criteria:"]
            out += [f"- {r.id}.AC{i}: {c}" for i, c in enumerate(r.acceptance_criteria, 1)]
            out.append("")
    for heading, items in (
        ("Assumptions", answer.assumptions),
        ("Open questions", answer.open_questions),
    ):
        out += [f"## {heading}", ""]
        out += [f"- {item}" for item in items] or ["None."]
        out.append("")
    return "\n".join(out)


# Architecture


class Component(_Answer):
    name: str
    responsibility: str
    paths: list[str] = Field(description="Where its code lives, e.g. 'app/' or 'frontend/'.")


class EntityField(_Answer):
    name: str
    type: str
    description: str


class Entity(_Answer):
    name: str
    description: str
    fields: list[EntityField]


class Operation(_Answer):
    name: str
    signature: str = Field(
        description="Exact: 'POST /users' with its JSON shapes, or a Python signature."
    )
    input: str = Field(description="Request or parameters, with types.")
    output: str = Field(description="Response or return value, with types.")
    errors: list[str] = Field(description="Each error case and how it is reported.")


class Interface(_Answer):
    name: str
    kind: Literal["http", "python", "cli", "file", "other"]
    provided_by: str = Field(description="The component that implements it.")
    used_by: list[str] = Field(description="The components that call it.")
    description: str
    operations: list[Operation] = Field(min_length=1)


class Decision(_Answer):
    id: str = Field(description="ADR-1, ADR-2, ...")
    title: str
    status: Literal["proposed", "accepted"]
    context: str
    decision: str
    consequences: str


class Coverage(_Answer):
    requirement_id: str
    how: str


class ArchitectureAnswer(_Answer):
    summary: str = Field(description="Two or three sentences for the team.")
    title: str
    overview: str
    components: list[Component] = Field(min_length=1)
    data_model: list[Entity]
    interfaces: list[Interface] = Field(
        min_length=1, description="Every interface both sides must implement, exactly."
    )
    decisions: list[Decision] = Field(min_length=1)
    requirement_coverage: list[Coverage]


def _architecture_doc(answer: ArchitectureAnswer) -> str:
    out = [f"# Architecture: {answer.title}", "", answer.overview.strip(), "", "## Components", ""]
    for c in answer.components:
        where = ", ".join(f"`{p}`" for p in c.paths) or "no code"
        out.append(f"- **{c.name}** ({where}): {c.responsibility}")
    out += ["", "## Data model", ""]
    for e in answer.data_model:
        out += [f"### {e.name}", "", e.description, "", "| field | type | description |"]
        out += ["|---|---|---|"] + [f"| {f.name} | {f.type} | {f.description} |" for f in e.fields]
        out.append("")
    if not answer.data_model:
        out += ["No persistent data.", ""]
    out += ["## Interfaces", ""]
    for i in answer.interfaces:
        users = ", ".join(i.used_by) or "nobody yet"
        out += [f"### {i.name} ({i.kind})", "", i.description, ""]
        out += [f"Implemented by {i.provided_by}; used by {users}.", ""]
        for op in i.operations:
            out += [f"#### `{op.signature}`", "", f"{op.name}.", ""]
            out += [f"- Input: {op.input}", f"- Output: {op.output}"]
            out += [f"- Error: {e}" for e in op.errors]
            out.append("")
    out += ["## Requirement coverage", ""]
    out += [f"- {c.requirement_id}: {c.how}" for c in answer.requirement_coverage] or [
        "None given."
    ]
    return "\n".join(out) + "\n"


def _decisions_doc(answer: ArchitectureAnswer) -> str:
    out = [f"# Decisions: {answer.title}", ""]
    for d in answer.decisions:
        out += [f"## {d.id}: {d.title}", "", f"Status: {d.status}", ""]
        out += ["### Context", "", d.context, "", "### Decision", "", d.decision, ""]
        out += ["### Consequences", "", d.consequences, ""]
    return "\n".join(out)


# Reviews


class Finding(_Answer):
    severity: Literal["critical", "high", "medium", "low"]
    path: str = Field(description="The file concerned ('' for the whole project).")
    line: int | None = Field(description="The line, or null for the whole file.")
    title: str
    detail: str
    fix: str = Field(description="A concrete change that resolves it.")


class ReviewAnswer(_Answer):
    summary: str = Field(description="Two or three sentences: the verdict and why.")
    verdict: Literal["approve", "changes_requested"]
    assessment: str = Field(description="The overall state of the work.")
    findings: list[Finding]
    strengths: list[str]


_SEVERITY = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def render_findings(answer: ReviewAnswer) -> str:
    """The findings as a markdown list, most severe first (the rework feedback)."""
    ordered = sorted(answer.findings, key=lambda f: (_SEVERITY[f.severity], f.path, f.line or 0))
    lines = []
    for number, f in enumerate(ordered, 1):
        where = (
            f"`{f.path}:{f.line}`" if f.path and f.line else f"`{f.path}`" if f.path else "project"
        )
        lines.append(f"{number}. [{f.severity}] {where}: {f.title}. {f.detail} Fix: {f.fix}")
    return "\n".join(lines)


def _review_doc(answer: ReviewAnswer, title: str) -> str:
    verdict = "approve" if answer.verdict == "approve" else "changes requested"
    out = [f"# {title}", "", f"Verdict: **{verdict}**", "", answer.assessment.strip(), ""]
    out += ["## Findings", "", render_findings(answer) or "No findings.", ""]
    out += ["## Strengths", ""] + ([f"- {s}" for s in answer.strengths] or ["None noted."])
    return "\n".join(out) + "\n"


# README


class Section(_Answer):
    heading: str
    body: str = Field(description="Markdown: prose, lists and fenced examples.")


class ReadmeAnswer(_Answer):
    summary: str = Field(description="Two or three sentences for the team.")
    title: str
    tagline: str
    sections: list[Section] = Field(min_length=1)


def _readme_doc(answer: ReadmeAnswer) -> str:
    out = [f"# {answer.title}", "", answer.tagline.strip(), ""]
    for s in answer.sections:
        out += [f"## {s.heading}", "", s.body.strip(), ""]
    return "\n".join(out)


# Generic


class FileAnswer(_Answer):
    path: str = Field(description="Relative path with '/' separators, e.g. 'app/main.py'.")
    content: str = Field(description="The complete text of the file.")


class FilesAnswer(_Answer):
    summary: str = Field(description="A few sentences on what was produced and decided.")
    files: list[FileAnswer] = Field(min_length=1, description="Every file, complete.")


# The registry


@dataclass(frozen=True)
class Rendered:
    """The files, summary and (for reviews) verdict a document answer yields."""

    files: dict[str, str]
    summary: str
    verdict: Verdict | None = None
    findings: str = ""


@dataclass(frozen=True)
class DocumentKind:
    """A typed answer and how its documents are rendered."""

    answer: type[_Answer]
    render: Callable[[Any, Persona], Rendered]

    def schema(self) -> dict[str, Any]:
        """The API-ready JSON schema of the answer."""
        return anthropic.transform_schema(self.answer)


def _paths(persona: Persona) -> list[str]:
    return [d.path for d in persona.deliverables]


def _render_requirements(answer: RequirementsAnswer, persona: Persona) -> Rendered:
    return Rendered({_paths(persona)[0]: _requirements_doc(answer)}, answer.summary)


def _render_architecture(answer: ArchitectureAnswer, persona: Persona) -> Rendered:
    architecture, decisions = _paths(persona)[:2]
    files = {architecture: _architecture_doc(answer), decisions: _decisions_doc(answer)}
    return Rendered(files, answer.summary)


def _render_review(answer: ReviewAnswer, persona: Persona) -> Rendered:
    title = persona.role[:1].upper() + persona.role[1:]
    return Rendered(
        {_paths(persona)[0]: _review_doc(answer, title)},
        answer.summary,
        verdict=Verdict(answer.verdict),
        findings=render_findings(answer),
    )


def _render_readme(answer: ReadmeAnswer, persona: Persona) -> Rendered:
    return Rendered({_paths(persona)[0]: _readme_doc(answer)}, answer.summary)


def _render_files(answer: FilesAnswer, persona: Persona) -> Rendered:
    return Rendered({f.path: f.content for f in answer.files}, answer.summary)


GENERIC = DocumentKind(FilesAnswer, _render_files)

DOCUMENT_KINDS: dict[str, DocumentKind] = {
    "requirements_analyst": DocumentKind(RequirementsAnswer, _render_requirements),
    "solution_architect": DocumentKind(ArchitectureAnswer, _render_architecture),
    "security_reviewer": DocumentKind(ReviewAnswer, _render_review),
    "code_reviewer": DocumentKind(ReviewAnswer, _render_review),
    "technical_writer": DocumentKind(ReadmeAnswer, _render_readme),
}


def document_kind(persona: Persona) -> DocumentKind:
    """The persona's typed answer, or the generic files answer."""
    return DOCUMENT_KINDS.get(persona.name, GENERIC)

"""The check request and report, as frozen models (the sandbox API without protobuf)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CheckName(StrEnum):
    """The checks the sandbox can run, by the name workflows use."""

    PYTEST = "pytest"
    RUFF = "ruff"
    COMPILE = "compile"


class CheckOutcome(StrEnum):
    """How a check ended. Only RAN comes with metrics."""

    RAN = "ran"
    """The tool ran to the end and its machine-readable output was read."""
    TOOL_CRASHED = "tool_crashed"
    """The tool failed without its machine-readable output (internal or usage error)."""
    TIMED_OUT = "timed_out"
    """The wall-time limit was reached and every process was killed."""
    LIMIT_EXCEEDED = "limit_exceeded"
    """Another limit stopped it: output size, CPU time, a resource-limit signal."""


class Isolation(StrEnum):
    """How generated code is kept from the host."""

    NAMESPACES = "namespaces"
    NONE = "none"


class SandboxFile(BaseModel):
    """A workspace file: a normalised relative path and its bytes."""

    model_config = ConfigDict(frozen=True)

    path: str
    content: bytes


class CheckRequest(BaseModel):
    """One check run: the workspace as it stands and the checks to run over it."""

    model_config = ConfigDict(frozen=True)

    files: tuple[SandboxFile, ...]
    checks: tuple[CheckName, ...]
    coverage: bool = False
    label: str = Field(default="", description="who asks, for logs only")


class TestFailure(BaseModel):
    """A test that failed (in its body) or errored (collection, set-up, tear-down)."""

    __test__ = False  # not a pytest test class
    model_config = ConfigDict(frozen=True)

    test: str
    kind: Literal["failed", "error"]
    message: str


class LintFinding(BaseModel):
    """One ruff finding."""

    model_config = ConfigDict(frozen=True)

    rule: str
    path: str
    line: int
    message: str


class CompileError(BaseModel):
    """A Python file that does not compile."""

    model_config = ConfigDict(frozen=True)

    path: str
    line: int = 0
    message: str


class CheckResult(BaseModel):
    """The outcome of one check; metrics only when it RAN."""

    model_config = ConfigDict(frozen=True)

    check: CheckName
    outcome: CheckOutcome
    reason: str = ""
    exit_code: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    failures: tuple[TestFailure, ...] = ()
    findings: tuple[LintFinding, ...] = ()
    findings_by_rule: dict[str, int] = Field(default_factory=dict)
    compile_errors: tuple[CompileError, ...] = ()
    missing_dependencies: tuple[str, ...] = ()
    omitted: int = 0
    output_tail: str = ""
    duration_seconds: float = 0.0

    @property
    def ran(self) -> bool:
        """Whether the tool ran to the end (its metrics are measured)."""
        return self.outcome is CheckOutcome.RAN


class CheckReport(BaseModel):
    """The result of a check run: the isolation in force, metrics and each check."""

    model_config = ConfigDict(frozen=True)

    isolation: Isolation
    metrics: dict[str, float]
    checks: tuple[CheckResult, ...]
    duration_seconds: float = 0.0

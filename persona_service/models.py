"""Domain models of a step attempt, free of protobuf and grpc."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field

from maestro.core.errors import FailedPrecondition, InvalidArgument, MaestroError
from maestro.personas import Persona, PersonaMode
from persona_service.rate_limits import RateLimits

if TYPE_CHECKING:
    from persona_service.call_admission import CallAdmission
    from persona_service.usage import UsageMeter


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class TextFile(_Frozen):
    """A file as the providers see it: a relative path and UTF-8 text."""

    path: str
    content: str


class DependencyContext(_Frozen):
    """What an upstream step produced, chosen for this step."""

    step_id: str
    persona: str
    summary: str
    files: tuple[TextFile, ...] = ()
    omitted_paths: tuple[str, ...] = ()


class Budget(_Frozen):
    """What one attempt may still spend; 0 means unlimited."""

    max_usd: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=0, ge=0)

    @property
    def unlimited(self) -> bool:
        return not self.max_usd and not self.max_tokens


class StepRequest(_Frozen):
    """One step attempt to run.

    Attributes:
        model: The model to call; "" for the worker's default.
        effort: The effort level; "" for the worker's default.
        mode: How to execute the step; None for the persona's default.
        workspace: The run's artifact tree as the step starts (text files); when
            empty, the dependencies' files stand in for it.
        workspace_omitted: Paths of the run that are not in `workspace`.
        owned_paths: Path -> the other step of the run that already wrote it.
        shared_paths: Paths (or prefixes ending in "/") any step may write.
        feedback: Rework feedback for this step; "" normally.
    """

    run_id: str
    step_id: str
    attempt: int
    persona: str
    requirement: str
    instructions: str = ""
    dependencies: tuple[DependencyContext, ...] = ()
    provider: str = ""
    model: str = ""
    effort: str = ""
    mode: PersonaMode | None = None
    budget: Budget = Budget()
    workspace: tuple[TextFile, ...] = ()
    workspace_omitted: tuple[str, ...] = ()
    owned_paths: dict[str, str] = Field(default_factory=dict)
    shared_paths: tuple[str, ...] = ()
    feedback: str = ""


class TokenUsage(_Frozen):
    """Tokens and cost of model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        """Every token billed: input, output, cache reads and cache writes."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_creation_input_tokens
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens
            + other.cache_creation_input_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            calls=self.calls + other.calls,
        )


class Verdict(StrEnum):
    """A reviewer's verdict."""

    APPROVE = "approve"
    CHANGES_REQUESTED = "changes_requested"


class StepOutput(_Frozen):
    """The result of a successful attempt."""

    summary: str
    files: tuple[TextFile, ...]
    usage: TokenUsage
    provider: str
    model: str
    transcript: bytes = b""
    verdict: Verdict | None = None
    findings: str = ""
    rate_limits: RateLimits | None = None
    """The API's rate-limit headers of the last call (None: no call answered)."""


class FailureKind(StrEnum):
    """How the scheduler should treat a failed attempt (see worker.proto)."""

    RETRYABLE = "retryable"
    OVERLOADED = "overloaded"
    RATE_LIMITED = "rate_limited"
    FATAL = "fatal"
    BUDGET_EXCEEDED = "budget_exceeded"


class StepFailed(MaestroError):
    """The work of an attempt failed; sent as a StepFailure message, never as a status.

    Attributes:
        kind: How the caller should treat it.
        reason: A short stable code ("http_529", "idle_timeout", "conflict", ...).
        usage: Usage of the attempt up to the failure, when the raiser knows it (the
            runner fills in its meter's total otherwise).
        transcript: The attempt's transcript so far, when there is one.
    """

    def __init__(
        self,
        kind: FailureKind,
        reason: str,
        message: str,
        *,
        retry_after: float | None = None,
        usage: TokenUsage | None = None,
        transcript: bytes = b"",
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.kind = kind
        self.reason = reason
        self.usage = usage
        self.transcript = transcript
        self.model = ""


ProgressCallback = Callable[[str], None]
"""Called with a human-readable note; the servicer streams it to the scheduler."""


class Provider(Protocol):
    """Produces a step's output for a persona. Implementations never block the loop."""

    name: str

    async def run(
        self,
        request: StepRequest,
        persona: Persona,
        *,
        timeout: float,
        progress: ProgressCallback,
        meter: UsageMeter | None = None,
        admission: CallAdmission | None = None,
    ) -> StepOutput:
        """Runs the step within `timeout` seconds.

        Args:
            request: The attempt.
            persona: Who runs it.
            timeout: Seconds the whole attempt may take.
            progress: Receives short notes for the scheduler's event stream.
            meter: Counts every model call's usage and enforces the attempt's budget;
                the runner reads it for heartbeats and failures.
            admission: Asks the scheduler before each model call after the first; None
                when the calls are not rate-limited (or the provider makes none).

        Raises:
            StepFailed: for every failure of the work.
        """
        ...

    async def aclose(self) -> None:
        """Releases connections; called once when the worker shuts down."""
        ...


# Failures of the request itself (gRPC status codes, not StepFailure messages).


class ProviderNotConfigured(FailedPrecondition):
    """The requested provider cannot run here (for example: no API key)."""


class UnknownPersona(InvalidArgument):
    def __init__(self, name: str) -> None:
        super().__init__("persona", f"unknown persona {name!r}")

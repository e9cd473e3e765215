"""Domain models of a step attempt, free of protobuf and grpc."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from maestro.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from maestro.personas import Persona


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


class StepRequest(_Frozen):
    """One step attempt to run."""

    run_id: str
    step_id: str
    attempt: int
    persona: str
    requirement: str
    instructions: str = ""
    dependencies: tuple[DependencyContext, ...] = ()
    provider: str = ""


class TokenUsage(_Frozen):
    input_tokens: int = 0
    output_tokens: int = 0


class StepOutput(_Frozen):
    """The result of a successful attempt."""

    summary: str
    files: tuple[TextFile, ...]
    usage: TokenUsage
    provider: str
    model: str


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
    ) -> StepOutput:
        """Runs the step within `timeout` seconds.

        Raises:
            ProviderError subclasses for every expected failure.
        """
        ...

    async def aclose(self) -> None:
        """Releases connections; called once when the worker shuts down."""
        ...


# The worker's exception family. Each maps to a status code in one place
# (maestro.core.serving), so the scheduler can tell retryable failures apart.


class ProviderNotConfigured(FailedPrecondition):
    """The requested provider cannot run here (for example: no API key)."""


class UnknownPersona(InvalidArgument):
    def __init__(self, name: str) -> None:
        super().__init__("persona", f"unknown persona {name!r}")


class ProviderRateLimited(ResourceExhausted):
    """The provider asked us to slow down."""


class ProviderUnavailable(Unavailable):
    """The provider could not be reached, or is overloaded or failing."""


class ProviderTimeout(DeadlineExceeded):
    """The provider did not answer within the attempt's time."""


class ProviderBadOutput(Internal):
    """The provider answered, but not with a usable result (the message says why)."""


class ProviderRejected(FailedPrecondition):
    """The provider refused the request itself (bad key, bad request); retrying won't help."""

"""What the scheduler sends to a worker and gets back (no protobuf here).

What goes out and comes back for every attempt is a plain frozen dataclass: built from
values the scheduler has already checked (its store, a validated spec) or that the
worker's result checks path by path (run_loop.validated_files), so pydantic's
validation would only cost time: a twentieth of the event loop on no-op steps, where
a step is sent up to 16 ancestors' outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from maestro.store import NO_USAGE, StepContextRecord, Usage
from scheduler.capacity import RateLimitReport


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


@dataclass(frozen=True, slots=True)
class AttemptBudget:
    """What one attempt may still spend; None is unlimited."""

    usd: float | None = None
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class AttemptRequest:
    run_id: str
    step_id: str
    attempt: int
    persona: str
    requirement: str
    instructions: str
    dependencies: tuple[StepContextRecord, ...]
    """The nearest earlier steps' outputs, as the store gives them."""
    provider: str
    model: str = ""
    effort: str = ""
    budget: AttemptBudget = AttemptBudget()
    owned_paths: tuple[tuple[str, str], ...] = ()
    """(path, step id) of the paths other steps of the run wrote."""
    shared_paths: tuple[str, ...] = ()
    """Paths (or "dir/") the workflow lets several steps write."""
    feedback: str = ""
    """In a rework round: the gate's report or the reviewer's findings, and what the
    step did before; empty otherwise."""
    admit_calls: bool = False
    """The worker asks before each model call after the first (the step's model is
    rate-limited)."""


class CallRequest(_Frozen):
    """A worker asks to make call number `call` of an attempt (worker.proto)."""

    call: int
    input_tokens: int
    usage: Usage | None = None
    """The attempt's usage so far: every earlier call has ended."""
    calls_made: int = 0
    """Calls the attempt has made so far."""
    rate_limits: RateLimitReport | None = None


@dataclass(frozen=True, slots=True)
class AttemptResult:
    summary: str
    files: tuple[tuple[str, bytes], ...]
    provider: str
    model: str
    usage: Usage = NO_USAGE
    transcript: bytes = b""
    verdict: str = ""
    """A reviewer's verdict: "approve" or "changes_requested"; empty for other personas."""
    findings: str = ""
    rate_limits: RateLimitReport | None = None
    """The API's rate-limit headers of the attempt's last call."""
    calls: int = 0
    """Model calls the attempt made."""

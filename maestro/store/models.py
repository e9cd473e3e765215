"""Records of run state, as the store reads and writes them (no protobuf here).

States and their meaning are defined once, here; the SQL lists of "finished" and
"active" states are derived from these enums, never written out as literals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class RunState(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    """Accepted, waiting for capacity (the scheduler's cap on steps in flight)."""
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in FINISHED_RUN_STATES


FINISHED_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
ACTIVE_RUN_STATES = frozenset(set(RunState) - FINISHED_RUN_STATES)


class StepState(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    """Ready, waiting for capacity."""
    RUNNING = "RUNNING"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"
    BLOCKED = "BLOCKED"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STEP_STATES


FINISHED_STEP_STATES = frozenset(
    {
        StepState.SUCCEEDED,
        StepState.FAILED,
        StepState.CANCELLED,
        StepState.SKIPPED,
        StepState.BLOCKED,
    }
)


class DispatchState(StrEnum):
    """One dispatch of an attempt to a worker."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    """The work failed (consumes the attempt)."""
    LOST = "LOST"
    """The platform failed (worker gone, scheduler restarted): the attempt is re-dispatched."""
    CANCELLED = "CANCELLED"


class EventType(StrEnum):
    RUN_CREATED = "RUN_CREATED"
    RUN_QUEUED = "RUN_QUEUED"
    RUN_STARTED = "RUN_STARTED"
    STEP_QUEUED = "STEP_QUEUED"
    STEP_STARTED = "STEP_STARTED"
    STEP_PROGRESS = "STEP_PROGRESS"
    ATTEMPT_LOST = "ATTEMPT_LOST"
    STEP_RETRY_SCHEDULED = "STEP_RETRY_SCHEDULED"
    ARTIFACT_RECORDED = "ARTIFACT_RECORDED"
    STEP_SUCCEEDED = "STEP_SUCCEEDED"
    STEP_FAILED = "STEP_FAILED"
    STEP_BLOCKED = "STEP_BLOCKED"
    STEP_CANCELLED = "STEP_CANCELLED"
    RUN_SUCCEEDED = "RUN_SUCCEEDED"
    RUN_FAILED = "RUN_FAILED"
    RUN_CANCELLED = "RUN_CANCELLED"
    # Model capacity (scheduler/capacity*.py).
    BREAKER_OPENED = "BREAKER_OPENED"
    BREAKER_CLOSED = "BREAKER_CLOSED"
    STEP_FALLBACK = "STEP_FALLBACK"
    MODEL_PAUSED = "MODEL_PAUSED"
    GATE_EVALUATED = "GATE_EVALUATED"
    REWORK_REQUESTED = "REWORK_REQUESTED"
    APPROVAL_REQUESTED = "APPROVAL_REQUESTED"
    STEP_APPROVED = "STEP_APPROVED"
    STEP_REJECTED = "STEP_REJECTED"
    ARTIFACT_CONFLICT = "ARTIFACT_CONFLICT"


TERMINAL_EVENTS = frozenset(
    {EventType.RUN_SUCCEEDED, EventType.RUN_FAILED, EventType.RUN_CANCELLED}
)

RUN_TERMINAL_EVENT = {
    RunState.SUCCEEDED: EventType.RUN_SUCCEEDED,
    RunState.FAILED: EventType.RUN_FAILED,
    RunState.CANCELLED: EventType.RUN_CANCELLED,
}


@dataclass(frozen=True, slots=True)
class Usage:
    """What model calls cost: tokens by kind, and dollars."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cost_usd + other.cost_usd,
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
            self.cache_read_tokens - other.cache_read_tokens,
            self.cache_write_tokens - other.cache_write_tokens,
            self.cost_usd - other.cost_usd,
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def attributes(self) -> dict[str, str]:
        """Event attributes, for the events that report spending."""
        return {
            "input_tokens": str(self.input_tokens),
            "output_tokens": str(self.output_tokens),
            "cache_read_tokens": str(self.cache_read_tokens),
            "cache_write_tokens": str(self.cache_write_tokens),
            "cost_usd": f"{self.cost_usd:.6f}",
        }


NO_USAGE = Usage()


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to write for one run: who holds it, and its fencing token.

    Every write for a run carries its lease; the store refuses it (LeaseLost) once
    another scheduler took the run over, which increments the token.
    """

    run_id: str
    owner: str
    token: int


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class NewRun(_Frozen):
    """What the scheduler records when it accepts a run."""

    run_id: str
    workflow_name: str
    spec_json: str
    requirement: str
    provider: str
    request_id: str
    created_by: str = ""
    steps: tuple[tuple[str, str, str, tuple[str, ...]], ...]
    """(step id, persona, kind, depends_on) in workflow order."""


class StepRecord(_Frozen):
    run_id: str
    step_id: str
    persona: str
    kind: str
    depends_on: tuple[str, ...]
    state: StepState
    attempts: int
    round: int
    start_time: datetime | None
    end_time: datetime | None
    due_time: datetime | None
    error: str
    summary: str
    provider: str
    model: str
    result_json: str
    usage: Usage
    feedback: str = ""
    """What the next attempt is told in a rework round; empty outside rework."""
    attempts_before_round: int = 0
    """Attempts made in earlier rounds (the retry policy counts within a round)."""


class RunRecord(_Frozen):
    run_id: str
    workflow_name: str
    spec_json: str
    requirement: str
    provider: str
    request_id: str
    created_by: str
    state: RunState
    error: str
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    owner: str | None
    last_sequence: int
    steps: tuple[StepRecord, ...]

    @property
    def usage(self) -> Usage:
        """Spending of every step of the run, failed and lost attempts included."""
        total = NO_USAGE
        for step in self.steps:
            total = total + step.usage
        return total


@dataclass(frozen=True, slots=True)
class RunHead:
    """What deciding who may follow a run, and from where, needs: no steps."""

    state: RunState
    last_sequence: int
    created_by: str


@dataclass(frozen=True)
class CreatedRun:
    """A run just recorded: its lease (None when nobody claimed it) and its record."""

    lease: Lease | None
    record: RunRecord


class EventRecord(_Frozen):
    run_id: str
    sequence: int
    type: EventType
    step_id: str
    time: datetime
    message: str
    attributes: dict[str, str]


class ArtifactRecord(_Frozen):
    run_id: str
    path: str
    step_id: str
    version: int
    attempt: int
    round: int
    size_bytes: int
    sha256: str
    create_time: datetime
    latest: bool = True
    content: bytes | None = None


class StepOutputRecord(_Frozen):
    """A successful step's result, as a later step's context is built from it."""

    step_id: str
    persona: str
    summary: str
    files: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class StepContextRecord:
    """What an earlier step gives a later one: its summary, and the files that fit.

    A dataclass, not a validated model: made from the store's own rows, up to 16 for
    every dispatch, inside the writer's transaction.
    """

    step_id: str
    persona: str
    summary: str
    files: tuple[tuple[str, bytes], ...]
    omitted_paths: tuple[str, ...]
    """Files it wrote that did not fit the byte budget (named, not silently dropped)."""


class StepResultRecord(_Frozen):
    """A successful attempt's result, as the scheduler hands it to the store."""

    summary: str
    files: tuple[tuple[str, bytes], ...]
    provider: str
    model: str
    usage: Usage = NO_USAGE
    result_json: str = ""
    shared_paths: tuple[str, ...] = ()
    """The workflow's shared paths: writing one after another step is no conflict."""


class Claim(_Frozen):
    """A run this scheduler now owns, and whether someone asked to cancel it."""

    lease: Lease
    cancel_requested: bool
    taken_from: str | None
    """The previous owner when the run was taken over; None for a fresh run."""


class CancelRequest(_Frozen):
    """What CancelRun found: the run's state and who drives it."""

    state: RunState
    owner: str | None
    lease_live: bool

"""Records of run state, as the store reads and writes them (no protobuf here)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class RunState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class StepState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    SKIPPED = "SKIPPED"
    BLOCKED = "BLOCKED"

    @property
    def finished(self) -> bool:
        return self in (
            StepState.SUCCEEDED,
            StepState.FAILED,
            StepState.CANCELLED,
            StepState.SKIPPED,
            StepState.BLOCKED,
        )


class EventType(StrEnum):
    RUN_CREATED = "RUN_CREATED"
    RUN_STARTED = "RUN_STARTED"
    STEP_STARTED = "STEP_STARTED"
    STEP_PROGRESS = "STEP_PROGRESS"
    STEP_RETRY_SCHEDULED = "STEP_RETRY_SCHEDULED"
    ARTIFACT_RECORDED = "ARTIFACT_RECORDED"
    STEP_SUCCEEDED = "STEP_SUCCEEDED"
    STEP_FAILED = "STEP_FAILED"
    STEP_BLOCKED = "STEP_BLOCKED"
    STEP_CANCELLED = "STEP_CANCELLED"
    RUN_SUCCEEDED = "RUN_SUCCEEDED"
    RUN_FAILED = "RUN_FAILED"
    RUN_CANCELLED = "RUN_CANCELLED"


TERMINAL_EVENTS = frozenset(
    {EventType.RUN_SUCCEEDED, EventType.RUN_FAILED, EventType.RUN_CANCELLED}
)

RUN_TERMINAL_EVENT = {
    RunState.SUCCEEDED: EventType.RUN_SUCCEEDED,
    RunState.FAILED: EventType.RUN_FAILED,
    RunState.CANCELLED: EventType.RUN_CANCELLED,
}


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
    steps: tuple[tuple[str, str, tuple[str, ...]], ...]
    """(step id, persona, depends_on) in workflow order."""


class StepRecord(_Frozen):
    run_id: str
    step_id: str
    persona: str
    depends_on: tuple[str, ...]
    state: StepState
    attempts: int
    start_time: datetime | None
    end_time: datetime | None
    error: str
    summary: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int


class RunRecord(_Frozen):
    run_id: str
    workflow_name: str
    spec_json: str
    requirement: str
    provider: str
    request_id: str
    state: RunState
    error: str
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    steps: tuple[StepRecord, ...]


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
    size_bytes: int
    sha256: str
    create_time: datetime
    content: bytes | None = None


class StepOutputRecord(_Frozen):
    """A successful step's result, as a later step's context is built from it."""

    step_id: str
    persona: str
    summary: str
    files: tuple[tuple[str, bytes], ...]


class StepResultRecord(_Frozen):
    """A successful attempt's result, as the scheduler hands it to the store."""

    summary: str
    files: tuple[tuple[str, bytes], ...]
    provider: str
    model: str
    input_tokens: int
    output_tokens: int

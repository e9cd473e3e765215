"""What the scheduler sends to a worker and gets back (no protobuf here)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from maestro.store import NO_USAGE, Usage


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class DependencyOutput(_Frozen):
    step_id: str
    persona: str
    summary: str
    files: tuple[tuple[str, bytes], ...]
    omitted_paths: tuple[str, ...]


class AttemptRequest(_Frozen):
    run_id: str
    step_id: str
    attempt: int
    persona: str
    requirement: str
    instructions: str
    dependencies: tuple[DependencyOutput, ...]
    provider: str


class AttemptResult(_Frozen):
    summary: str
    files: tuple[tuple[str, bytes], ...]
    provider: str
    model: str
    usage: Usage = NO_USAGE

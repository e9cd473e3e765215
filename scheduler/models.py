"""What the scheduler sends to a worker and gets back (no protobuf here)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
    model: str = ""
    effort: str = ""


class AttemptResult(_Frozen):
    summary: str
    files: tuple[tuple[str, bytes], ...]
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    transcript: bytes = b""
    verdict: str = ""
    findings: str = ""

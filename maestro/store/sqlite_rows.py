"""SQLite rows -> store records. Pure functions."""

from __future__ import annotations

import json
from datetime import datetime

import aiosqlite

from maestro.store.models import (
    ArtifactRecord,
    EventRecord,
    EventType,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
)

Row = aiosqlite.Row


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def step_from_row(row: Row) -> StepRecord:
    return StepRecord(
        run_id=row["run_id"],
        step_id=row["step_id"],
        persona=row["persona"],
        depends_on=tuple(json.loads(row["depends_on"])),
        state=StepState(row["state"]),
        attempts=row["attempts"],
        start_time=parse_time(row["start_time"]),
        end_time=parse_time(row["end_time"]),
        error=row["error"],
        summary=row["summary"],
        provider=row["provider"],
        model=row["model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
    )


def run_from_row(row: Row, steps: tuple[StepRecord, ...]) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        workflow_name=row["workflow_name"],
        spec_json=row["spec_json"],
        requirement=row["requirement"],
        provider=row["provider"],
        request_id=row["request_id"],
        state=RunState(row["state"]),
        error=row["error"],
        create_time=datetime.fromisoformat(row["create_time"]),
        start_time=parse_time(row["start_time"]),
        end_time=parse_time(row["end_time"]),
        steps=steps,
    )


def event_from_row(row: Row) -> EventRecord:
    return EventRecord(
        run_id=row["run_id"],
        sequence=row["sequence"],
        type=EventType(row["type"]),
        step_id=row["step_id"],
        time=datetime.fromisoformat(row["time"]),
        message=row["message"],
        attributes=json.loads(row["attributes"]),
    )


def artifact_from_row(row: Row, *, with_content: bool) -> ArtifactRecord:
    return ArtifactRecord(
        run_id=row["run_id"],
        path=row["path"],
        step_id=row["step_id"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        create_time=datetime.fromisoformat(row["create_time"]),
        content=bytes(row["content"]) if with_content else None,
    )

"""Store records -> public API messages, and page tokens. Pure functions."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from maestro.api.gateway.v1 import gateway_pb2
from maestro.core.errors import InvalidArgument
from maestro.store import ArtifactRecord, EventRecord, RunRecord, StepRecord, Usage


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def usage_to_proto(usage: Usage) -> gateway_pb2.TokenUsage:
    return gateway_pb2.TokenUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_input_tokens=usage.cache_read_tokens,
        cache_creation_input_tokens=usage.cache_write_tokens,
        cost_usd=usage.cost_usd,
    )


def step_to_proto(step: StepRecord) -> gateway_pb2.Step:
    return gateway_pb2.Step(
        name=f"runs/{step.run_id}/steps/{step.step_id}",
        step_id=step.step_id,
        persona=step.persona,
        depends_on=list(step.depends_on),
        state=gateway_pb2.StepState.Value(f"STEP_STATE_{step.state.value}"),
        attempts=step.attempts,
        start_time=_timestamp(step.start_time),
        end_time=_timestamp(step.end_time),
        error=step.error,
        summary=step.summary,
        usage=usage_to_proto(step.usage),
        provider=step.provider,
        model=step.model,
    )


def run_to_proto(run: RunRecord) -> gateway_pb2.Run:
    return gateway_pb2.Run(
        name=f"runs/{run.run_id}",
        workflow=run.workflow_name,
        requirement=run.requirement,
        state=gateway_pb2.RunState.Value(f"RUN_STATE_{run.state.value}"),
        steps=[step_to_proto(step) for step in run.steps],
        create_time=_timestamp(run.create_time),
        start_time=_timestamp(run.start_time),
        end_time=_timestamp(run.end_time),
        error=run.error,
        provider=run.provider,
        usage=usage_to_proto(run.usage),
    )


def event_to_proto(event: EventRecord) -> gateway_pb2.RunEvent:
    return gateway_pb2.RunEvent(
        run=f"runs/{event.run_id}",
        sequence=event.sequence,
        type=gateway_pb2.EventType.Value(f"EVENT_TYPE_{event.type.value}"),
        step_id=event.step_id,
        time=_timestamp(event.time),
        message=event.message,
        attributes=event.attributes,
    )


def artifact_to_proto(artifact: ArtifactRecord) -> gateway_pb2.Artifact:
    return gateway_pb2.Artifact(
        name=f"runs/{artifact.run_id}/artifacts/{artifact.path}",
        path=artifact.path,
        step_id=artifact.step_id,
        size_bytes=artifact.size_bytes,
        sha256=artifact.sha256,
        content=artifact.content or b"",
        create_time=_timestamp(artifact.create_time),
    )


def encode_page_token(run: RunRecord) -> str:
    cursor = {"t": run.create_time.isoformat(), "id": run.run_id}
    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()


def decode_page_token(token: str) -> tuple[datetime, str]:
    """The (create time, run id) cursor a page token carries."""
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(cursor["t"]), str(cursor["id"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token", "is not a token this API returned") from None

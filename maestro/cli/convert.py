"""Gateway protobuf messages -> the command line's plain models. Pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from maestro.api.gateway.v1 import gateway_pb2 as pb
from maestro.cli.models import (
    ArtifactView,
    EventView,
    GateMetricView,
    RunView,
    StepView,
    TokenUsageView,
)


def _enum_name(enum: EnumDescriptor, value: int, prefix: str) -> str:
    # A newer server may send a value this client does not know; show its number
    # rather than fail the whole command.
    known = enum.values_by_number.get(value)
    if known is None:
        return f"UNKNOWN_{value}"
    return known.name.removeprefix(prefix)


def run_state_name(value: int) -> str:
    """`RUN_STATE_SUCCEEDED` -> `SUCCEEDED`."""
    return _enum_name(pb.RunState.DESCRIPTOR, value, "RUN_STATE_")


def step_state_name(value: int) -> str:
    """`STEP_STATE_BLOCKED` -> `BLOCKED`."""
    return _enum_name(pb.StepState.DESCRIPTOR, value, "STEP_STATE_")


def event_type_name(value: int) -> str:
    """`EVENT_TYPE_STEP_STARTED` -> `STEP_STARTED`."""
    return _enum_name(pb.EventType.DESCRIPTOR, value, "EVENT_TYPE_")


def timestamp_to_datetime(ts: Timestamp) -> datetime | None:
    """An aware UTC datetime, or None for an unset (all-zero) timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _time(message: Message, field: str) -> datetime | None:
    # Unset message fields read back as the zero Timestamp; HasField tells them apart
    # from a real epoch value, which no Maestro time ever is anyway.
    if not message.HasField(field):
        return None
    ts: Timestamp = getattr(message, field)
    return timestamp_to_datetime(ts)


def usage_from_proto(usage: pb.TokenUsage) -> TokenUsageView:
    """Converts token usage."""
    return TokenUsageView(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_input_tokens,
        cache_write_tokens=usage.cache_creation_input_tokens,
        cost_usd=usage.cost_usd,
    )


def step_from_proto(step: pb.Step) -> StepView:
    """Converts one step of a run."""
    return StepView(
        step_id=step.step_id,
        persona=step.persona,
        depends_on=tuple(step.depends_on),
        state=step_state_name(step.state),
        attempts=step.attempts,
        start_time=_time(step, "start_time"),
        end_time=_time(step, "end_time"),
        error=step.error,
        summary=step.summary,
        usage=usage_from_proto(step.usage),
        provider=step.provider,
        model=step.model,
        kind=step.kind or "persona",
        round=step.round,
        gate_metrics=tuple(
            GateMetricView(
                metric=m.metric,
                value=m.value if m.measured else None,
                threshold=m.threshold,
                passed=m.passed,
            )
            for m in step.gate_metrics
        ),
    )


def run_from_proto(run: pb.Run) -> RunView:
    """Converts a run with its steps."""
    return RunView(
        name=run.name,
        workflow=run.workflow,
        requirement=run.requirement,
        state=run_state_name(run.state),
        steps=tuple(step_from_proto(s) for s in run.steps),
        create_time=_time(run, "create_time"),
        start_time=_time(run, "start_time"),
        end_time=_time(run, "end_time"),
        error=run.error,
        provider=run.provider,
    )


def event_from_proto(event: pb.RunEvent) -> EventView:
    """Converts one run event."""
    return EventView(
        run=event.run,
        sequence=event.sequence,
        type=event_type_name(event.type),
        step_id=event.step_id,
        time=_time(event, "time"),
        message=event.message,
        attributes=dict(event.attributes),
    )


def artifact_from_proto(artifact: pb.Artifact) -> ArtifactView:
    """Converts an artifact, with its content when the message carries it."""
    return ArtifactView(
        name=artifact.name,
        path=artifact.path,
        step_id=artifact.step_id,
        size_bytes=artifact.size_bytes,
        sha256=artifact.sha256,
        create_time=_time(artifact, "create_time"),
        content=artifact.content,
        version=artifact.version,
        attempt=artifact.attempt,
        round=artifact.round,
        latest=artifact.latest,
    )

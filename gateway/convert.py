"""Store records -> public API messages, and page tokens. Pure functions."""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from gateway.event_details import details_for
from gateway.names import RUN_ID_PATTERN, run_name
from maestro.api.gateway.v1 import gateway_pb2
from maestro.api.scheduler.v1 import scheduler_pb2
from maestro.core.errors import InvalidArgument
from maestro.paths import BadPath, normalize_artifact_path
from maestro.personas import Persona
from maestro.sandbox.gate import GateVerdict
from maestro.store import ArtifactRecord, EventRecord, RunRecord, StepRecord, Usage
from maestro.workflow import WorkflowSpec

# Page tokens are base64url (no padding) of a versioned cursor. They are opaque to
# clients; here they are parsed strictly: anything but a token this API made is
# INVALID_ARGUMENT, and nothing in one is ever interpreted beyond the cursor.
_MAX_TOKEN_CHARS = 700
_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_RUN_CURSOR = re.compile(r"r1\.([0-9]{1,18})\.([0-9a-f]+)")
_ARTIFACT_PREFIX = b"a1."
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_MICROSECOND = timedelta(microseconds=1)


def _timestamp(value: datetime | None) -> Timestamp | None:
    """An aware datetime as a Timestamp: exactly Timestamp.FromDatetime's answer, in a
    third of its time (it goes through a time tuple; one per event sent)."""
    if value is None:
        return None
    micros = (value - _EPOCH) // _MICROSECOND
    return Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)


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
        name=f"{run_name(step.run_id)}/steps/{step.step_id}",
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
        kind=step.kind,
        round=step.round,
        gate_metrics=gate_metrics_to_proto(step),
    )


def gate_metrics_to_proto(step: StepRecord) -> list[gateway_pb2.GateMetric]:
    """A gate step's last verdict, metric by metric (none before it ran)."""
    if step.kind != "gate" or not step.result_json:
        return []
    try:
        verdict = GateVerdict.model_validate_json(step.result_json)
    except ValidationError:
        return []  # not a verdict this code knows; the summary still says it
    return [
        gateway_pb2.GateMetric(
            metric=m.metric,
            measured=m.value is not None,
            value=m.value or 0.0,
            threshold=m.threshold.describe(),
            passed=m.passed,
            reason=m.reason,
        )
        for m in verdict.metrics
    ]


def run_to_proto(run: RunRecord) -> gateway_pb2.Run:
    return gateway_pb2.Run(
        name=run_name(run.run_id),
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
        creator=run.created_by,
    )


def created_run_to_proto(run_id: str, created: scheduler_pb2.CreatedRun) -> gateway_pb2.Run:
    """The public form of a run the scheduler has just recorded: what `run_to_proto`
    gives for it read back from the store (a test compares the two), without reading
    a large run back."""
    name = run_name(run_id)
    run = gateway_pb2.Run(
        name=name,
        workflow=created.workflow_name,
        requirement=created.requirement,
        state=gateway_pb2.RUN_STATE_PENDING,
        create_time=created.create_time,
        provider=created.provider,
        creator=created.created_by,
    )
    run.usage.SetInParent()  # zero, but present, as for a run read back
    add = run.steps.add
    for step in created.steps:
        add(
            name=f"{name}/steps/{step.step_id}",
            step_id=step.step_id,
            persona=step.persona,
            depends_on=step.depends_on,
            state=gateway_pb2.STEP_STATE_PENDING,
            kind=step.kind,
        ).usage.SetInParent()
    return run


def event_to_proto(event: EventRecord) -> gateway_pb2.RunEvent:
    return gateway_pb2.RunEvent(
        run=run_name(event.run_id),
        sequence=event.sequence,
        type=gateway_pb2.EventType.Value(f"EVENT_TYPE_{event.type.value}"),
        step_id=event.step_id,
        time=_timestamp(event.time),
        message=event.message,
        attributes=event.attributes,
        **details_for(event.type.value, event.attributes),
    )


class EventProtoCache:
    """Converts each stored event once for all the streams that send it.

    A stored event never changes, so (run, sequence) names its answer for good; a
    hundred followers of one run then cost one conversion per event, not a hundred.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._protos: OrderedDict[tuple[str, int], gateway_pb2.RunEvent] = OrderedDict()
        # Followers at the same place in a run get the same events at once: one batch.
        self._batches: OrderedDict[tuple[str, int, int], list[gateway_pb2.RunEventBatch]] = (
            OrderedDict()
        )

    def get(self, event: EventRecord) -> gateway_pb2.RunEvent:
        """The event as the API sends it."""
        key = (event.run_id, event.sequence)
        proto = self._protos.get(key)
        if proto is None:
            proto = self._protos[key] = event_to_proto(event)
            if len(self._protos) > self._size:
                self._protos.popitem(last=False)
        return proto

    def batches(self, events: list[EventRecord]) -> list[gateway_pb2.RunEventBatch]:
        """Consecutive events of one run (not empty) as StreamRunEventBatches sends them:
        one message, or several where they would pass MAX_BATCH_BYTES together."""
        key = (events[0].run_id, events[0].sequence, events[-1].sequence)
        found = self._batches.get(key)
        if found is None:
            found = self._batches[key] = _split_batches([self.get(e) for e in events])
            if len(self._batches) > self._size // 4:
                self._batches.popitem(last=False)
        return found


MAX_BATCH_BYTES = 1024 * 1024
"""A batch of events stops growing past this size, far below a client's default 4 MiB
receive limit (an event's message can be long: a step's error, say)."""


def _split_batches(protos: list[gateway_pb2.RunEvent]) -> list[gateway_pb2.RunEventBatch]:
    batches: list[gateway_pb2.RunEventBatch] = []
    chunk: list[gateway_pb2.RunEvent] = []
    size = 0
    for proto in protos:
        grown = size + proto.ByteSize()
        if chunk and grown > MAX_BATCH_BYTES:
            batches.append(gateway_pb2.RunEventBatch(events=chunk))
            chunk, grown = [], proto.ByteSize()
        chunk.append(proto)
        size = grown
    batches.append(gateway_pb2.RunEventBatch(events=chunk))
    return batches


def artifact_to_proto(artifact: ArtifactRecord) -> gateway_pb2.Artifact:
    return gateway_pb2.Artifact(
        name=f"{run_name(artifact.run_id)}/artifacts/{artifact.path}",
        path=artifact.path,
        step_id=artifact.step_id,
        size_bytes=artifact.size_bytes,
        sha256=artifact.sha256,
        content=artifact.content or b"",
        create_time=_timestamp(artifact.create_time),
        version=artifact.version,
        attempt=artifact.attempt,
        round=artifact.round,
        latest=artifact.latest,
    )


def workflow_to_proto(spec: WorkflowSpec, yaml_text: str) -> gateway_pb2.Workflow:
    return gateway_pb2.Workflow(
        name=spec.name,
        description=spec.description,
        step_ids=[step.id for step in spec.steps],
        yaml=yaml_text,
    )


def persona_to_proto(persona: Persona) -> gateway_pb2.Persona:
    return gateway_pb2.Persona(
        name=persona.name,
        role=persona.role,
        deliverables=[
            gateway_pb2.Deliverable(path=d.path, kind=d.kind.value, description=d.description)
            for d in persona.deliverables
        ],
    )


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(token: str) -> bytes:
    if len(token) > _MAX_TOKEN_CHARS or not _TOKEN_ALPHABET.fullmatch(token):
        raise _bad_token()
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise _bad_token() from None


def _bad_token() -> InvalidArgument:
    return InvalidArgument(
        "page_token", "is not a page token this API returned (pass next_page_token unchanged)"
    )


def encode_page_token(run: RunRecord) -> str:
    """The token of the page after `run` (in newest-first order)."""
    micros = (run.create_time - _EPOCH) // _MICROSECOND
    return _encode(f"r1.{micros}.{run.run_id}".encode("ascii"))


def decode_page_token(token: str) -> tuple[datetime, str]:
    """The (create time, run id) cursor a ListRuns page token carries.

    Raises:
        InvalidArgument: not a token `encode_page_token` made.
    """
    try:
        text = _decode(token).decode("ascii")
    except UnicodeDecodeError:
        raise _bad_token() from None
    match = _RUN_CURSOR.fullmatch(text)
    if match is None or not RUN_ID_PATTERN.fullmatch(match.group(2)):
        raise _bad_token()
    return _EPOCH + timedelta(microseconds=int(match.group(1))), match.group(2)


def encode_artifact_token(path: str, version: int = 0) -> str:
    """The token of the ListArtifacts page after `path` (and its `version`, when the
    listing gives every version)."""
    return _encode(_ARTIFACT_PREFIX + f"{version}.".encode() + path.encode("utf-8"))


def decode_artifact_token(token: str) -> tuple[str, int]:
    """The path and version a ListArtifacts page token carries.

    Raises:
        InvalidArgument: not a token `encode_artifact_token` made.
    """
    raw = _decode(token)
    if not raw.startswith(_ARTIFACT_PREFIX):
        raise _bad_token()
    number, dot, rest = raw[len(_ARTIFACT_PREFIX) :].partition(b".")
    if not dot or not number.isdigit() or len(number) > 9:
        raise _bad_token()
    try:
        path = rest.decode("utf-8")
        if normalize_artifact_path(path) != path:
            raise _bad_token()
    except (UnicodeDecodeError, BadPath):
        raise _bad_token() from None
    return path, int(number)

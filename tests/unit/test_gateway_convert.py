from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.convert import (
    MAX_BATCH_BYTES,
    EventProtoCache,
    _timestamp,
    decode_page_token,
    encode_page_token,
    event_to_proto,
    run_to_proto,
)
from gateway.event_details import DETAILS_OF_TYPE
from gateway.names import parse_artifact_name, parse_run_name
from maestro.api.gateway.v1 import gateway_pb2
from maestro.core.errors import InvalidArgument
from maestro.store import EventRecord, EventType, RunRecord, RunState, StepRecord, StepState, Usage

NOW = datetime(2026, 11, 24, 18, 0, 0, 123456, tzinfo=UTC)
# Run ids are 16 lowercase hex digits, as the scheduler makes them.
RUN = "0123456789abcdef"


def _run() -> RunRecord:
    step = StepRecord(
        run_id=RUN,
        step_id="backend",
        persona="backend_developer",
        kind="persona",
        depends_on=("arch",),
        state=StepState.BLOCKED,
        attempts=0,
        round=0,
        start_time=None,
        end_time=NOW,
        due_time=None,
        error="depends on failed step 'arch'",
        summary="",
        provider="",
        model="",
        result_json="",
        usage=Usage(input_tokens=3, output_tokens=4, cache_read_tokens=5, cost_usd=0.25),
    )
    return RunRecord(
        run_id=RUN,
        workflow_name="sdlc-linear",
        spec_json="{}",
        requirement="r",
        provider="offline",
        request_id="",
        created_by="",
        state=RunState.FAILED,
        error="step 'arch' failed",
        create_time=NOW,
        start_time=NOW,
        end_time=None,
        owner=None,
        last_sequence=9,
        steps=(step,),
    )


def test_run_records_become_api_resources() -> None:
    run = run_to_proto(_run())
    assert run.name == f"runs/{RUN}"
    assert run.state == gateway_pb2.RUN_STATE_FAILED
    assert run.create_time.ToDatetime(tzinfo=UTC) == NOW
    assert not run.HasField("end_time")
    step = run.steps[0]
    assert step.name == f"runs/{RUN}/steps/backend"
    assert step.state == gateway_pb2.STEP_STATE_BLOCKED
    assert list(step.depends_on) == ["arch"]
    assert not step.HasField("start_time")
    # Usage counts every attempt, with cache tokens and cost; the run sums its steps.
    assert (step.usage.input_tokens, step.usage.cache_read_input_tokens) == (3, 5)
    assert step.usage.cost_usd == pytest.approx(0.25)
    assert run.usage.output_tokens == 4


def test_page_tokens_round_trip_and_garbage_is_rejected() -> None:
    assert decode_page_token(encode_page_token(_run())) == (NOW, RUN)
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token("not-a-token")
    assert caught.value.field == "page_token"


def test_names_are_parsed_strictly() -> None:
    assert parse_run_name(f"runs/{RUN}") == RUN
    assert parse_artifact_name(f"runs/{RUN}/artifacts/app/x.py") == (RUN, "app/x.py")
    for bad in (
        "abc",
        "runs/",
        "runs/ABC",
        "jobs/abc",
        "runs/a/b",
        "runs/abc123",
        f"runs/{RUN}\n",
        f"runs/{RUN.upper()}",
        f"runs/{RUN}0",
        f"runs/{RUN}/",
    ):
        with pytest.raises(InvalidArgument):
            parse_run_name(bad)
    with pytest.raises(InvalidArgument, match=r"\.\."):
        parse_artifact_name(f"runs/{RUN}/artifacts/../x")
    for bad_path in (".git/config", "a//b", "./a", "x\u202ey"):
        with pytest.raises(InvalidArgument):
            parse_artifact_name(f"runs/{RUN}/artifacts/{bad_path}")


def _event(kind: EventType, attributes: dict[str, str]) -> gateway_pb2.RunEvent:
    record = EventRecord(
        run_id="0123456789abcdef",
        sequence=3,
        type=kind,
        step_id="backend",
        time=datetime(2026, 1, 2, tzinfo=UTC),
        message="m",
        attributes=attributes,
    )
    return event_to_proto(record)


def test_event_details_are_the_attributes_typed_and_the_map_stays() -> None:
    attributes = {
        "attempt": "2",
        "dispatch": "3",
        "provider": "anthropic",
        "model": "claude-sonnet-5-5",
        "files": "4",
        "input_tokens": "1200",
        "output_tokens": "300",
        "cache_read_tokens": "900",
        "cache_write_tokens": "0",
        "cost_usd": "0.012300",
        "extra": "kept in the map only",
    }
    event = _event(EventType.STEP_SUCCEEDED, attributes)
    assert event.WhichOneof("details") == "step_succeeded"
    details = event.step_succeeded
    assert (details.attempt, details.dispatch, details.files) == (2, 3, 4)
    assert (details.input_tokens, details.cache_read_tokens, details.cost_usd) == (
        1200,
        900,
        0.0123,
    )
    assert (details.provider, details.model) == ("anthropic", "claude-sonnet-5-5")
    assert dict(event.attributes) == attributes

    retry = _event(EventType.STEP_RETRY_SCHEDULED, {"attempt": "1", "retry_in_seconds": "2.50"})
    assert retry.attempt_failed.retry_in_seconds == 2.5
    started = _event(EventType.RUN_STARTED, {"scheduler": "h:1:a", "redriven": "true"})
    assert started.run_started.redriven is True
    ended = _event(EventType.RUN_FAILED, {"error": "step backend failed"})
    assert ended.run_ended.error == "step backend failed"


def test_an_attribute_that_does_not_parse_stays_out_of_the_typed_details() -> None:
    event = _event(
        EventType.STEP_STARTED, {"attempt": "x", "dispatch": str(2**40), "persona": "qa"}
    )
    assert event.WhichOneof("details") == "step_started"
    assert (event.step_started.attempt, event.step_started.dispatch) == (0, 0)
    assert event.step_started.persona == "qa"
    assert event.attributes["attempt"] == "x"


def test_every_details_member_belongs_to_event_types_that_exist() -> None:
    members = {f.name for f in gateway_pb2.RunEvent.DESCRIPTOR.oneofs_by_name["details"].fields}
    assert set(DETAILS_OF_TYPE.values()) == members
    assert set(DETAILS_OF_TYPE) <= {t.value for t in EventType}
    api_types = set(gateway_pb2.EventType.keys())
    assert {f"EVENT_TYPE_{t}" for t in DETAILS_OF_TYPE} <= api_types
    cancelled = _event(EventType.STEP_CANCELLED, {})
    assert cancelled.WhichOneof("details") is None


def test_each_event_is_converted_once_for_every_stream_and_the_cache_is_bounded() -> None:
    cache = EventProtoCache(size=2)
    record = EventRecord(
        run_id="0123456789abcdef",
        sequence=1,
        type=EventType.RUN_CREATED,
        step_id="",
        time=datetime(2026, 1, 2, tzinfo=UTC),
        message="run created",
        attributes={"workflow": "w", "requested_provider": "offline"},
    )
    first = cache.get(record)
    assert cache.get(record) is first
    assert first == event_to_proto(record)
    assert first.run_created.workflow == "w"
    for sequence in (2, 3):
        cache.get(record.model_copy(update={"sequence": sequence}))
    assert cache.get(record) is not first  # evicted, converted again


def test_events_ready_together_make_one_batch_shared_by_every_stream_split_by_size() -> None:
    cache = EventProtoCache()
    records = [
        EventRecord(
            run_id=RUN,
            sequence=sequence,
            type=EventType.STEP_FAILED,
            step_id="s",
            time=NOW,
            message=message,
            attributes={},
        )
        for sequence, message in enumerate(["short", "x" * (MAX_BATCH_BYTES // 2)] * 3, 1)
    ]
    batches = cache.batches(records)
    assert cache.batches(records) is batches  # the next follower's: not built again
    # Three ~half-limit messages cannot share a batch; every event is there, in order.
    assert [[e.sequence for e in b.events] for b in batches] == [[1, 2, 3], [4, 5], [6]]
    assert all(b.ByteSize() <= MAX_BATCH_BYTES for b in batches)
    assert batches[0].events[0] == event_to_proto(records[0])
    # An event larger than the limit on its own still goes, alone.
    huge = records[0].model_copy(update={"sequence": 7, "message": "y" * MAX_BATCH_BYTES})
    assert [len(b.events) for b in cache.batches([huge])] == [1]


def test_gate_rework_and_approval_events_have_typed_details() -> None:
    gate = _event(
        EventType.GATE_EVALUATED,
        {"passed": "false", "round": "1", "isolation": "namespaces", "metric.tests_failed": "2"},
    )
    assert gate.WhichOneof("details") == "gate_evaluated"
    assert (gate.gate_evaluated.passed, gate.gate_evaluated.round) == (False, 1)
    assert gate.attributes["metric.tests_failed"] == "2"
    rework = _event(EventType.REWORK_REQUESTED, {"round": "2", "steps": "a,b", "reason": "r"})
    assert (rework.rework_requested.round, rework.rework_requested.steps) == (2, "a,b")
    asked = _event(
        EventType.APPROVAL_REQUESTED,
        {"prompt": "ok?", "round": "0", "timeout_seconds": "3600", "on_timeout": "reject"},
    )
    assert asked.approval_requested.timeout_seconds == 3600.0
    for kind in (EventType.STEP_APPROVED, EventType.STEP_REJECTED):
        decided = _event(kind, {"decision": "approve", "decided_by": "ana", "round": "0"})
        assert decided.WhichOneof("details") == "decision"
        assert decided.decision.decided_by == "ana"


@pytest.mark.parametrize(
    "value",
    [
        NOW,
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC),
        NOW.astimezone(timezone(timedelta(hours=-5, minutes=-30))),
    ],
)
def test_timestamps_are_timestamp_from_datetime_s(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)
    assert _timestamp(value) == expected

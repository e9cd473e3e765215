from datetime import UTC, datetime

import pytest

from gateway.convert import decode_page_token, encode_page_token, run_to_proto
from gateway.names import parse_artifact_name, parse_run_name
from maestro.api.gateway.v1 import gateway_pb2
from maestro.core.errors import InvalidArgument
from maestro.store import RunRecord, RunState, StepRecord, StepState, Usage

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

"""Runs whose persona worker talks to a fake Anthropic API through the real SDK:
cancellation mid-flight, provider failures, and a successful tool-use run."""

from __future__ import annotations

import json
import time
import uuid

import grpc
import pytest

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.e2e.events import collect_events, wait_for_event
from tests.fakes.anthropic_server import FakeAnthropic


async def _create(stub: gateway_pb2_grpc.MaestroServiceAsyncStub, workflow: str) -> gateway_pb2.Run:
    return await stub.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_name=workflow,
            requirement="A REST API with user registration and login",
            request_id=uuid.uuid4().hex,
        ),
        timeout=10,
    )


async def test_cancelling_a_run_mid_step_ends_it_cancelled_within_a_second(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_default_delay(60)  # the model "thinks" far longer than the test
    run = await _create(anthropic_gateway, "sdlc-parallel")
    seen = await wait_for_event(
        anthropic_gateway, run.name, gateway_pb2.EVENT_TYPE_STEP_PROGRESS, "requirements"
    )
    # The model call is really in flight before we cancel.
    assert await fake_anthropic.wait_for_requests_async(1, within=10)

    started = time.monotonic()
    await anthropic_gateway.CancelRun(gateway_pb2.CancelRunRequest(name=run.name), timeout=10)
    rest = await collect_events(anthropic_gateway, run.name, after=seen[-1].sequence, timeout=5)
    elapsed = time.monotonic() - started

    assert rest[-1].type == gateway_pb2.EVENT_TYPE_RUN_CANCELLED
    assert elapsed < 1.0, f"cancellation took {elapsed:.2f}s"
    final = await anthropic_gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=10)
    assert final.state == gateway_pb2.RUN_STATE_CANCELLED
    assert {s.state for s in final.steps} == {gateway_pb2.STEP_STATE_CANCELLED}
    # Only that one call was made: nothing started after the cancellation.
    assert len(fake_anthropic.requests) == 1

    with pytest.raises(grpc.aio.AioRpcError) as again:
        await anthropic_gateway.CancelRun(gateway_pb2.CancelRunRequest(name=run.name), timeout=10)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_provider_error_fails_the_step_and_blocks_its_dependents(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    # 401 is not worth retrying: the step fails at its first attempt.
    fake_anthropic.push_error(401, "authentication_error", "invalid x-api-key")
    run = await _create(anthropic_gateway, "sdlc-linear")
    events = await collect_events(anthropic_gateway, run.name)

    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_FAILED
    final = await anthropic_gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=10)
    assert final.state == gateway_pb2.RUN_STATE_FAILED
    assert "requirements" in final.error and "401" in final.error
    steps = {s.step_id: s for s in final.steps}
    assert steps["requirements"].state == gateway_pb2.STEP_STATE_FAILED
    assert steps["requirements"].attempts == 1
    blocked = [s for s in final.steps if s.step_id != "requirements"]
    assert {s.state for s in blocked} == {gateway_pb2.STEP_STATE_BLOCKED}
    assert all("requirements" in s.error for s in blocked)


async def test_an_overloaded_api_is_retried_and_the_run_succeeds(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push_error(529, "overloaded_error", "Overloaded")
    run = await _create(anthropic_gateway, "sdlc-linear")
    events = await collect_events(anthropic_gateway, run.name)

    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    retries = [e for e in events if e.type == gateway_pb2.EVENT_TYPE_STEP_RETRY_SCHEDULED]
    assert [e.step_id for e in retries] == ["requirements"]
    assert "529" in retries[0].attributes["reason"]
    final = await anthropic_gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=10)
    steps = {s.step_id: s for s in final.steps}
    assert steps["requirements"].attempts == 2
    # Every persona step answered by the model; the gate measured in the sandbox.
    assert {s.step_id: s.provider for s in final.steps if s.kind == "gate"} == {"checks": "sandbox"}
    assert all(s.provider == "anthropic" for s in final.steps if s.kind == "persona")
    assert sum(s.usage.output_tokens for s in final.steps) > 0
    # Document steps make one call (plus the retried one); code steps (implementation,
    # testing) two: the default fake model writes the deliverables, then submits.
    assert len(fake_anthropic.requests) == 3 + 1 + 2 * 2
    usage = {s.step_id: s.usage for s in final.steps}
    assert usage["implementation"].output_tokens > 0
    # The code steps' transcripts are kept with the run: one JSON object per line.
    transcript = await anthropic_gateway.GetArtifact(
        gateway_pb2.GetArtifactRequest(
            name=f"{run.name}/artifacts/transcripts/implementation.jsonl"
        ),
        timeout=10,
    )
    assert transcript.step_id == "implementation"
    lines = [json.loads(line) for line in transcript.content.decode().splitlines()]
    assert lines[0]["event"] == "start"
    assert any(line["event"] == "tool" for line in lines), lines[:3]


async def test_a_rate_limited_step_waits_as_long_as_the_api_asked(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    # Our own first backoff is at most 1s; the API asks for 2s, and that must win.
    fake_anthropic.push_error(429, "rate_limit_error", "slow down", retry_after=2)
    run = await _create(anthropic_gateway, "sdlc-linear")
    events = await collect_events(anthropic_gateway, run.name)

    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    (retry,) = [e for e in events if e.type == gateway_pb2.EVENT_TYPE_STEP_RETRY_SCHEDULED]
    assert float(retry.attributes["retry_in_seconds"]) >= 2.0
    assert "answered 429 rate limited" in retry.attributes["reason"]
    assert retry.attributes["reason"].endswith("[rate_limited]")
    started = [e for e in events if e.type == gateway_pb2.EVENT_TYPE_STEP_STARTED]
    gap = started[1].time.ToDatetime() - retry.time.ToDatetime()
    assert gap.total_seconds() >= 2.0


async def test_overload_inside_a_stream_is_retried_not_fatal(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    # A 200 stream that breaks off with overloaded_error once ended whole runs at once.
    fake_anthropic.push_stream_error("overloaded_error", "Overloaded", after=2)
    run = await _create(anthropic_gateway, "sdlc-linear")
    events = await collect_events(anthropic_gateway, run.name)

    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    (retry,) = [e for e in events if e.type == gateway_pb2.EVENT_TYPE_STEP_RETRY_SCHEDULED]
    reason = retry.attributes["reason"]
    assert "reported overloaded_error inside its stream" in reason
    assert fake_anthropic.base_url in reason and "worker" not in reason
    final = await anthropic_gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=10)
    steps = {s.step_id: s for s in final.steps}
    assert steps["requirements"].attempts == 2
    # The review step's verdict came back typed; its document was rendered from it.
    assert steps["review"].state == gateway_pb2.STEP_STATE_SUCCEEDED


async def test_the_run_budget_stops_the_run_before_a_call_it_cannot_pay_for(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    # One token for the whole run: the first step's one call is allowed (nothing is
    # spent yet) and spends more than that; the next step is refused before any call.
    workflow = (
        "name: frugal\n"
        "budget: {tokens: 1}\n"
        "steps:\n"
        "  - {id: requirements, persona: requirements_analyst}\n"
        "  - {id: architecture, persona: solution_architect, depends_on: [requirements]}\n"
        "  - {id: review, persona: code_reviewer, depends_on: [architecture]}\n"
    )
    run = await anthropic_gateway.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_yaml=workflow, requirement="A CLI that adds numbers", request_id="budget-1"
        ),
        timeout=10,
    )
    events = await collect_events(anthropic_gateway, run.name)

    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_FAILED
    final = await anthropic_gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=10)
    steps = {s.step_id: s for s in final.steps}
    assert steps["requirements"].state == gateway_pb2.STEP_STATE_SUCCEEDED
    spent = steps["requirements"].usage
    total = spent.input_tokens + spent.output_tokens
    total += spent.cache_read_input_tokens + spent.cache_creation_input_tokens
    assert total > 1
    assert steps["architecture"].state == gateway_pb2.STEP_STATE_FAILED
    assert steps["architecture"].error == (f"budget exceeded: the run spent {total} of 1 tokens")
    assert steps["architecture"].attempts == 0
    assert steps["review"].state == gateway_pb2.STEP_STATE_BLOCKED
    assert "architecture" in final.error
    # Only the first step's call reached the API.
    assert len(fake_anthropic.requests) == 1

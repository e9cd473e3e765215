"""The scheduler restarts mid-run: reads keep working, and the run is re-driven."""

from __future__ import annotations

import uuid

import grpc
import pytest

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.stack import SCHEDULER, LocalStack
from tests.e2e.events import collect_events, event_type_name, wait_for_event
from tests.fakes.anthropic_server import FakeAnthropic


async def test_a_run_survives_a_scheduler_restart(
    anthropic_stack: LocalStack,
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.set_default_delay(60)  # the first attempt is still in flight at the stop
    run = await anthropic_gateway.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_name="sdlc-linear", requirement="a todo list API", request_id=uuid.uuid4().hex
        ),
        timeout=10,
    )
    await wait_for_event(
        anthropic_gateway, run.name, gateway_pb2.EVENT_TYPE_STEP_PROGRESS, "requirements"
    )

    assert await anthropic_stack.stop_service(SCHEDULER) == 0  # graceful drain

    # The gateway keeps answering reads from the store while the scheduler is down...
    during = await anthropic_gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=5)
    assert during.state == gateway_pb2.RUN_STATE_RUNNING
    # ...and says at once that writes cannot be done now.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await anthropic_gateway.CreateRun(
            gateway_pb2.CreateRunRequest(workflow_name="sdlc-linear", requirement="x"), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    fake_anthropic.set_default_delay(0)
    await anthropic_stack.start_service(SCHEDULER)
    events = await collect_events(anthropic_gateway, run.name)

    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    restarts = [e for e in events if e.type == gateway_pb2.EVENT_TYPE_RUN_STARTED]
    assert [e.attributes.get("redriven", "") for e in restarts] == ["", "true"]
    # The attempt in flight was lost to the restart: announced, and sent again under
    # the same attempt number (a platform fault consumes no attempt).
    (lost,) = [e for e in events if e.type == gateway_pb2.EVENT_TYPE_ATTEMPT_LOST]
    assert (lost.step_id, lost.attributes["attempt"]) == ("requirements", "1")
    final = await anthropic_gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=5)
    assert all(s.attempts == 1 for s in final.steps)
    succeeded = [e for e in events if event_type_name(e) == "STEP_SUCCEEDED"]
    assert [e.step_id for e in succeeded] == [s.step_id for s in final.steps]

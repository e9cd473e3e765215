"""Steps start the moment their own dependencies succeed: no level barriers."""

from __future__ import annotations

import uuid

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.e2e.events import collect_events
from tests.fakes.anthropic_server import FakeAnthropic

# Levels: root | fast_branch, slow_branch | after_fast. With level-by-level dispatch
# after_fast would wait for slow_branch; it must not.
UNEVEN = """
name: uneven
steps:
  - {id: root, persona: requirements_analyst}
  - {id: fast_branch, persona: backend_developer, depends_on: [root]}
  - {id: slow_branch, persona: frontend_developer, depends_on: [root]}
  - {id: after_fast, persona: qa_engineer, depends_on: [fast_branch]}
"""


async def test_a_step_does_not_wait_for_unrelated_steps_of_an_earlier_level(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.delay_when("frontend developer", 2.0)
    run = await anthropic_gateway.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_yaml=UNEVEN, requirement="a todo API", request_id=uuid.uuid4().hex
        ),
        timeout=10,
    )
    events = await collect_events(anthropic_gateway, run.name)
    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED

    final = await anthropic_gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=10)
    steps = {s.step_id: s for s in final.steps}
    slow, after_fast = steps["slow_branch"], steps["after_fast"]
    assert after_fast.start_time.ToDatetime() >= steps["fast_branch"].end_time.ToDatetime()
    # after_fast ran, start to end, while the slow step of the level before was working.
    assert after_fast.end_time.ToDatetime() < slow.end_time.ToDatetime()

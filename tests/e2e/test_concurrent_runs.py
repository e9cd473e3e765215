"""Many runs at once through the real gateway: each is created, isolated and finished."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.e2e.events import collect_events

RUNS = 120
IN_FLIGHT = 16

# Every run's gate runs real checks in the sandbox, two at a time: on a slow machine
# 120 gates take most of two minutes, so this test gets more than the suite's default.
pytestmark = pytest.mark.timeout(360)


async def _one_run(
    stub: gateway_pb2_grpc.MaestroServiceAsyncStub, index: int
) -> tuple[gateway_pb2.Run, list[gateway_pb2.RunEvent]]:
    run = await stub.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_name="sdlc-parallel",
            requirement=f"service number {index}",
            request_id=uuid.uuid4().hex,
        ),
        timeout=30,
    )
    return run, await collect_events(stub, run.name, timeout=120)


async def test_concurrent_runs_are_each_created_finished_and_kept_apart(
    gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
) -> None:
    # Many requests share the gateway's one store connection at once; a read there
    # must still see the run the scheduler committed a moment before (it once did not).
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def bounded(index: int) -> tuple[gateway_pb2.Run, list[gateway_pb2.RunEvent]]:
        async with slots:
            return await _one_run(gateway, index)

    results = await asyncio.gather(*(bounded(i) for i in range(RUNS)))

    assert len({run.name for run, _ in results}) == RUNS
    for run, events in results:
        assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED, events[-1].message
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert {e.run for e in events} == {run.name}
    # Each run's artifacts are its own: the requirement it was given is in its documents.
    for index in (0, RUNS - 1):
        run, _ = results[index]
        doc = await gateway.GetArtifact(
            gateway_pb2.GetArtifactRequest(name=f"{run.name}/artifacts/docs/requirements.md"),
            timeout=10,
        )
        assert f"service number {index}".encode() in doc.content

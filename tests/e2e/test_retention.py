"""Retention: the scheduler deletes finished runs older than the configured age."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.stack import LocalStack
from tests.e2e.channels import gateway_channel
from tests.e2e.events import collect_events


async def test_finished_runs_expire_after_the_retention_period(
    tmp_path: Path, database_url: str
) -> None:
    env = {
        "MAESTRO_SCHEDULER_RUN_RETENTION_DAYS": str(2 / 86_400),  # two seconds
        "MAESTRO_SCHEDULER_RETENTION_SWEEP_SECONDS": "0.2",
    }
    stack = LocalStack(
        tmp_path / "stack", provider="offline", database_url=database_url, extra_env=env
    )
    async with stack:
        channel = gateway_channel(stack)
        try:
            gateway = gateway_pb2_grpc.MaestroServiceStub(channel)
            run = await gateway.CreateRun(
                gateway_pb2.CreateRunRequest(
                    workflow_name="sdlc-linear",
                    requirement="a todo list API",
                    request_id=uuid.uuid4().hex,
                ),
                timeout=10,
            )
            events = await collect_events(gateway, run.name)
            assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
            # Still there right after it finished...
            await gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=5)
            # ...and gone once it is older than the retention period.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while True:
                try:
                    await gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=5)
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.NOT_FOUND
                    break
                if loop.time() > deadline:
                    pytest.fail("the finished run was never deleted")
                await asyncio.sleep(0.2)
        finally:
            await channel.close(None)

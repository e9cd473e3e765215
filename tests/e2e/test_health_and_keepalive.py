"""Health and keepalive as every service really serves them (real interceptors, real processes)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.stack import SERVICES, LocalStack
from maestro.core.client import KEEPALIVE_ENV, insecure_channel
from tests.e2e.channels import gateway_channel
from tests.e2e.events import TERMINAL
from tests.fakes.anthropic_server import FakeAnthropic

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("service", SERVICES)
async def test_health_check_and_watch_work_on_every_service(
    offline_stack: LocalStack, service: str
) -> None:
    channel = insecure_channel(offline_stack.address(service))
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        checked = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert checked.status == SERVING

        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        first = await watch.read()
        assert first.status == SERVING
        # Draining: watchers hear NOT_SERVING before the service goes away.
        stopping = asyncio.create_task(offline_stack.stop_service(service))
        second = await watch.read()
        assert second.status == NOT_SERVING
        assert await stopping == 0
    finally:
        await channel.close(None)


async def test_an_idle_event_stream_outlives_many_keepalive_intervals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_anthropic: FakeAnthropic
) -> None:
    # Clients ping every 0.2 s; servers must allow it, or the quiet stream below would
    # get GOAWAY "too_many_pings" after a few pings.
    monkeypatch.setenv(KEEPALIVE_ENV, "0.2")
    env = {
        "ANTHROPIC_API_KEY": "test-key",
        "MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        # No heartbeats or progress for the whole stall: the event stream stays silent.
        "MAESTRO_WORKER_HEARTBEAT_INTERVAL_SECONDS": "60",
    }
    fake_anthropic.set_default_delay(5.0)  # 25 keepalive intervals without an event
    async with LocalStack(tmp_path / "stack", provider="anthropic", extra_env=env) as stack:
        channel = gateway_channel(stack)
        try:
            gateway = gateway_pb2_grpc.MaestroServiceStub(channel)
            run = await gateway.CreateRun(
                gateway_pb2.CreateRunRequest(
                    workflow_yaml=(
                        "name: one-step\nsteps:\n"
                        "  - id: requirements\n    persona: requirements_analyst\n"
                    ),
                    requirement="a todo list API",
                    request_id=uuid.uuid4().hex,
                ),
                timeout=10,
            )
            request = gateway_pb2.StreamRunEventsRequest(name=run.name)
            events = [e async for e in gateway.StreamRunEvents(request, timeout=60)]
        finally:
            await channel.close(None)
        # gRPC's own warnings go to a service's output, not to its log.
        logs = "".join(
            path.read_text()
            for name in SERVICES
            for path in (stack.log_path(name), stack.output_path(name))
        )
    assert events[-1].type in TERMINAL
    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    gaps = [
        (b.time.ToDatetime() - a.time.ToDatetime()).total_seconds()
        for a, b in zip(events, events[1:], strict=False)
    ]
    assert max(gaps) >= 3.0  # the stream really was idle for many intervals
    assert "too_many_pings" not in logs

"""Health means ready: a real grpc.aio server whose readiness probe fails and recovers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from maestro.core.client import insecure_channel
from maestro.core.serving import NOT_SERVING, SERVING, probe_readiness


@pytest.fixture
async def served_health() -> AsyncIterator[tuple[HealthServicer, health_pb2_grpc.HealthStub]]:
    server = grpc.aio.server()
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = insecure_channel(f"127.0.0.1:{port}")
    yield health, health_pb2_grpc.HealthStub(channel)
    await channel.close(None)
    await server.stop(None)


async def test_health_follows_the_readiness_probe(
    served_health: tuple[HealthServicer, health_pb2_grpc.HealthStub],
) -> None:
    health, stub = served_health
    broken = asyncio.Event()

    async def readiness() -> None:
        if broken.is_set():
            raise RuntimeError("store unusable")

    probe = asyncio.create_task(probe_readiness(health, ["x.v1.Svc"], readiness, interval=0.01))
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="x.v1.Svc"), timeout=10)
    try:
        await health.set("x.v1.Svc", SERVING)
        statuses = [(await watch.read()).status]
        broken.set()
        statuses.append((await watch.read()).status)
        broken.clear()
        statuses.append((await watch.read()).status)
    finally:
        watch.cancel()
        probe.cancel()
    assert statuses == [SERVING, NOT_SERVING, SERVING]
    overall = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert overall.status == SERVING

"""Keepalive pings agree on both ends: a quiet stream is never closed for "too many pings"."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from maestro.cli.ports import free_port
from maestro.core.client import KEEPALIVE_ENV, insecure_channel, server_options


async def _serve_health(
    options: list[tuple[str, int]] | None, port: int = 0
) -> tuple[grpc.aio.Server, int]:
    """A health service on loopback (`port` 0: any free one); returns it and its port."""
    server = grpc.aio.server(options=options)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


async def _quiet_stream_outcome(options: list[tuple[str, int]] | None) -> grpc.StatusCode:
    """Holds a health Watch open with nothing to say for 5 s; returns how it ended."""
    server, port = await _serve_health(options)
    channel = insecure_channel(f"127.0.0.1:{port}")
    try:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        await watch.read()  # the current status; then silence
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await watch.read()
        return ended.value.code()
    finally:
        await channel.close(None)
        await server.stop(None)


async def test_a_quiet_stream_survives_many_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEEPALIVE_ENV, "0.2")  # 25 pings in 5 s
    # Control: a server with gRPC's defaults closes the connection, which shows the
    # client really does ping at that rate...
    assert await _quiet_stream_outcome(None) == grpc.StatusCode.UNAVAILABLE
    # ...and Maestro's servers permit it: the stream lasts until its own deadline.
    assert await _quiet_stream_outcome(server_options()) == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_channel_reconnects_within_seconds_of_a_long_outage() -> None:
    # gRPC's default backoff grows from 1 s to 2 minutes and fails every call until its
    # next attempt: after 10 s down, a caller (the gateway's change feed) would wait
    # several more seconds after the service was back. Maestro's channels try every 2 s.
    port = free_port()
    server, bound = await _serve_health(server_options(), port)
    assert bound == port
    channel = insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    loop = asyncio.get_running_loop()
    try:
        await stub.Check(request, timeout=5)
        await server.stop(None)
        outage_ends = loop.time() + 10
        while loop.time() < outage_ends:  # a caller that keeps trying, as the gateway does
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Check(request, timeout=1)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.1)
        server, bound = await _serve_health(server_options(), port)
        assert bound == port
        back = loop.time()
        while True:
            try:
                await stub.Check(request, timeout=1)
                break
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.05)
        # At most the 2 s cap, with gRPC's 20% jitter, and room for a slow machine.
        assert loop.time() - back < 3.5
    finally:
        await channel.close(None)
        await server.stop(None)

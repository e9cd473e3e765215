"""Keepalive pings agree on both ends: a quiet stream is never closed for "too many pings"."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from maestro.core.client import KEEPALIVE_ENV, insecure_channel, server_options


async def _quiet_stream_outcome(options: list[tuple[str, int]] | None) -> grpc.StatusCode:
    """Holds a health Watch open with nothing to say for 5 s; returns how it ended."""
    server = grpc.aio.server(options=options)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
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

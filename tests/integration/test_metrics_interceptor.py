"""The metrics interceptor on a real grpc.aio server: every call counted once, by the
status it ended with, timed, and no longer in flight once it ended (its label children
are looked up once per method, so calls of one method share them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from maestro.api.gateway.v1 import gateway_pb2
from maestro.core.errors import NotFound
from maestro.core.interceptor import ServingInterceptor
from maestro.core.metrics import MetricsInterceptor

SERVICE = "test.v1.Metered"


async def _get(request: gateway_pb2.GetRunRequest, context: Any) -> gateway_pb2.Run:
    if request.name == "missing":
        raise NotFound("no such run")
    return gateway_pb2.Run(name=request.name)


async def _list(request: gateway_pb2.GetRunRequest, context: Any) -> AsyncIterator[gateway_pb2.Run]:
    for index in range(3):
        yield gateway_pb2.Run(name=f"{request.name}/{index}")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = grpc.aio.server(interceptors=[MetricsInterceptor(), ServingInterceptor()])
    handlers = {
        "Get": grpc.unary_unary_rpc_method_handler(
            _get,
            request_deserializer=gateway_pb2.GetRunRequest.FromString,
            response_serializer=gateway_pb2.Run.SerializeToString,
        ),
        "List": grpc.unary_stream_rpc_method_handler(
            _list,
            request_deserializer=gateway_pb2.GetRunRequest.FromString,
            response_serializer=gateway_pb2.Run.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    bound = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield bound
    await server.stop(None)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"grpc_service": SERVICE, **labels}) or 0.0


async def test_calls_are_counted_by_the_code_they_ended_with(port: int) -> None:
    get = {"grpc_type": "unary", "grpc_method": "Get"}
    listing = {"grpc_type": "server_stream", "grpc_method": "List"}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/Get",
            request_serializer=gateway_pb2.GetRunRequest.SerializeToString,
            response_deserializer=gateway_pb2.Run.FromString,
        )
        stream = channel.unary_stream(
            f"/{SERVICE}/List",
            request_serializer=gateway_pb2.GetRunRequest.SerializeToString,
            response_deserializer=gateway_pb2.Run.FromString,
        )
        for _ in range(2):
            assert (await call(gateway_pb2.GetRunRequest(name="a"), timeout=5)).name == "a"
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call(gateway_pb2.GetRunRequest(name="missing"), timeout=5)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        names = [run.name async for run in stream(gateway_pb2.GetRunRequest(name="b"), timeout=5)]
        assert names == ["b/0", "b/1", "b/2"]

    assert _value("grpc_server_started_total", **get) == 3
    assert _value("grpc_server_handled_total", **get, grpc_code="OK") == 2
    assert _value("grpc_server_handled_total", **get, grpc_code="NOT_FOUND") == 1
    assert _value("grpc_server_handling_seconds_count", **get) == 3
    assert _value("grpc_server_handled_total", **listing, grpc_code="OK") == 1
    assert _value("grpc_server_handling_seconds_count", **listing) == 1
    assert _value("grpc_server_in_flight", grpc_method="Get") == 0
    assert _value("grpc_server_in_flight", grpc_method="List") == 0

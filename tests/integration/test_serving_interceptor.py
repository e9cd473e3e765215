"""The serving interceptor on a real grpc.aio server: auth, limits, undecodable requests,
status details, and reflection v1 and v1alpha."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection_pb2

from maestro.api.gateway.v1 import gateway_pb2
from maestro.core.auth import BearerAuthenticator, TokenTable, hash_token
from maestro.core.client import error_from_rpc, insecure_channel
from maestro.core.errors import (
    InvalidArgument,
    NotFound,
    Resource,
    ResourceExhausted,
    Unauthenticated,
)
from maestro.core.interceptor import ServingInterceptor
from maestro.core.limits import ClientLimits, LimitSettings
from maestro.core.reflection import enable_reflection
from maestro.core.status import DETAILS_METADATA_KEY

SERVICE = "test.v1.Probe"
TOKEN = "mst_test-token"


async def _get(request: gateway_pb2.GetRunRequest, context: Any) -> gateway_pb2.Run:
    if request.name == "boom":
        raise RuntimeError("a bug with a secret inside")
    if request.name == "missing":
        raise NotFound("run runs/x does not exist", resource=Resource("Run", "runs/x"))
    if request.name == "slow down":
        raise ResourceExhausted("slow down", retry_after=2.5)
    if request.name == "bad":
        raise InvalidArgument("name", "bad \udfff value " + "x" * 50_000)
    return gateway_pb2.Run(name=request.name)


async def _watch(
    request: gateway_pb2.GetRunRequest, context: Any
) -> AsyncIterator[gateway_pb2.Run]:
    yield gateway_pb2.Run(name=request.name)
    await asyncio.Event().wait()  # holds the stream open until the client cancels


@pytest.fixture
async def server() -> AsyncIterator[int]:
    table = TokenTable([(hash_token(TOKEN), _identity("alice"))])
    limits = ClientLimits(LimitSettings(requests_per_second=5, burst=20, max_streams=1))
    server = grpc.aio.server(
        interceptors=[ServingInterceptor(BearerAuthenticator(table, realm="probe"), limits)]
    )
    handlers = {
        "Get": grpc.unary_unary_rpc_method_handler(
            _get,
            request_deserializer=gateway_pb2.GetRunRequest.FromString,
            response_serializer=gateway_pb2.Run.SerializeToString,
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            _watch,
            request_deserializer=gateway_pb2.GetRunRequest.FromString,
            response_serializer=gateway_pb2.Run.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(server, [SERVICE])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(None)


def _identity(name: str) -> Any:
    from maestro.core.auth import Identity

    return Identity(name)


def _raw(channel: Any, method: str) -> Any:
    return channel.unary_unary(f"/{SERVICE}/{method}")  # bytes in, bytes out


def _details(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    trailers: Any = err.trailing_metadata() or ()
    raw = dict(trailers)[DETAILS_METADATA_KEY]
    return status_pb2.Status.FromString(raw)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a",  # a length-delimited field with no length
        b"\x0a\x05ab",  # a length past the end
        b"\x0a\x02\xff\xfe",  # a string field that is not UTF-8
        b"\x0f",  # wire type 7 does not exist
        b"\x08" + b"\xff" * 11,  # a varint longer than 10 bytes
    ],
)
async def test_undecodable_requests_are_invalid_argument_with_a_field_violation(
    server: int, payload: bytes
) -> None:
    channel = insecure_channel(f"127.0.0.1:{server}", token=TOKEN)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _raw(channel, "Get")(payload, timeout=5)
    finally:
        await channel.close(None)
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "maestro.api.gateway.v1.GetRunRequest" in (err.details() or "")
    status = _details(err)
    bad = error_details_pb2.BadRequest()
    assert status.details[-1].Unpack(bad)
    assert bad.field_violations[0].field == "request"
    rebuilt = error_from_rpc(err)
    assert isinstance(rebuilt, InvalidArgument)
    assert rebuilt.error_reason == "REQUEST_UNDECODABLE"


async def test_calls_without_a_known_token_are_unauthenticated_but_health_is_public(
    server: int,
) -> None:
    for token in (None, "mst_wrong"):
        channel = insecure_channel(f"127.0.0.1:{server}", token=token)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _raw(channel, "Get")(b"", timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert isinstance(error_from_rpc(caught.value), Unauthenticated)
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await channel.close(None)


async def test_every_call_is_checked_though_the_wrapped_handler_is_made_once(
    server: int,
) -> None:
    """The interceptor keeps its wrapper of a method (maestro.core.wrapped_handlers):
    who calls, and what, is still looked at call by call."""
    good = insecure_channel(f"127.0.0.1:{server}", token=TOKEN)
    wrong = insecure_channel(f"127.0.0.1:{server}", token="mst_wrong")
    request = gateway_pb2.GetRunRequest(name="runs/a").SerializeToString()
    try:
        for _ in range(2):
            answer = gateway_pb2.Run.FromString(await _raw(good, "Get")(request, timeout=5))
            assert answer.name == "runs/a"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _raw(wrong, "Get")(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await _raw(good, "Get")(
                    gateway_pb2.GetRunRequest(name="missing").SerializeToString(), timeout=5
                )
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await good.close(None)
        await wrong.close(None)


async def test_errors_carry_status_details_and_come_back_as_the_same_error(server: int) -> None:
    channel = insecure_channel(f"127.0.0.1:{server}", token=TOKEN)
    get = channel.unary_unary(
        f"/{SERVICE}/Get",
        request_serializer=gateway_pb2.GetRunRequest.SerializeToString,
        response_deserializer=gateway_pb2.Run.FromString,
    )
    try:
        failures = {}
        for name in ("boom", "missing", "slow down", "bad"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await get(gateway_pb2.GetRunRequest(name=name), timeout=5)
            failures[name] = caught.value
    finally:
        await channel.close(None)
    boom = failures["boom"]
    assert boom.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (boom.details() or "")
    missing = error_from_rpc(failures["missing"])
    assert isinstance(missing, NotFound)
    assert missing.resource == Resource("Run", "runs/x")
    assert missing.error_reason == "NOT_FOUND"
    slow = error_from_rpc(failures["slow down"])
    # RetryInfo, not a custom header: what the scheduler's backoff reads.
    assert slow.retry_after == 2.5
    bad = failures["bad"]
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Bounded and encodable, though the error held a lone surrogate and 50,000 chars.
    assert len((bad.details() or "").encode()) <= 1024
    assert "\\udfff" in (bad.details() or "")
    trailers: Any = bad.trailing_metadata() or ()
    assert len(dict(trailers)[DETAILS_METADATA_KEY]) <= 2048


async def test_rate_and_stream_limits_answer_resource_exhausted_with_retry_info(
    server: int,
) -> None:
    channel = insecure_channel(f"127.0.0.1:{server}", token=TOKEN)
    get = channel.unary_unary(
        f"/{SERVICE}/Get",
        request_serializer=gateway_pb2.GetRunRequest.SerializeToString,
        response_deserializer=gateway_pb2.Run.FromString,
    )
    watch = channel.unary_stream(
        f"/{SERVICE}/Watch",
        request_serializer=gateway_pb2.GetRunRequest.SerializeToString,
        response_deserializer=gateway_pb2.Run.FromString,
    )
    try:
        first: Any = watch(gateway_pb2.GetRunRequest(name="a"), timeout=5)
        assert (await first.read()).name == "a"  # holds the one stream slot
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await watch(gateway_pb2.GetRunRequest(name="b"), timeout=5).read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_from_rpc(caught.value).error_reason == "TOO_MANY_STREAMS"
        first.cancel()
        codes = []
        for _ in range(25):
            try:
                await get(gateway_pb2.GetRunRequest(name="x"), timeout=5)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as err:
                codes.append(err.code())
                limited = error_from_rpc(err)
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        assert limited.error_reason == "RATE_LIMITED"
        assert limited.retry_after is not None and 0 < limited.retry_after <= 1
    finally:
        await channel.close(None)


async def test_reflection_is_served_as_v1_and_v1alpha_without_a_token(server: int) -> None:
    channel: Any = insecure_channel(f"127.0.0.1:{server}", token=None)
    try:
        for version in ("v1", "v1alpha"):
            call = channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            stream = call(timeout=5)
            await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            await stream.write(
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="grpc.reflection.v1.ServerReflection"
                )
            )
            await stream.done_writing()
            listed: Any = await stream.read()
            described: Any = await stream.read()
            names = {s.name for s in listed.list_services_response.service}
            assert {SERVICE, "grpc.reflection.v1.ServerReflection"} <= names
            assert described.file_descriptor_response.file_descriptor_proto
            # An undecodable request on a bidi stream is refused the same way.
            raw = channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
            )(timeout=5)
            await raw.write(b"\x0a\x05ab")
            await raw.done_writing()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw.read()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close(None)

"""The CLI's event stream against a real grpc.aio server in this process: batches when
the gateway has StreamRunEventBatches, one event per message from an older one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.gateway_client import GatewayClient

RUN = "runs/0123456789abcdef"
EVENTS = [
    gateway_pb2.RunEvent(run=RUN, sequence=1, type=gateway_pb2.EVENT_TYPE_RUN_CREATED),
    gateway_pb2.RunEvent(run=RUN, sequence=2, type=gateway_pb2.EVENT_TYPE_RUN_STARTED),
    gateway_pb2.RunEvent(run=RUN, sequence=3, type=gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED),
]
Context = grpc.aio.ServicerContext[Any, Any]


class _OlderGateway(gateway_pb2_grpc.MaestroServiceServicer):
    """A gateway from before StreamRunEventBatches (the base class answers UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def StreamRunEvents(
        self, request: gateway_pb2.StreamRunEventsRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.RunEvent]:
        self.calls.append("StreamRunEvents")
        for event in EVENTS[request.after_sequence :]:
            yield event


class _Gateway(_OlderGateway):
    async def StreamRunEventBatches(
        self, request: gateway_pb2.StreamRunEventsRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.RunEventBatch]:
        self.calls.append("StreamRunEventBatches")
        rest = EVENTS[request.after_sequence :]
        yield gateway_pb2.RunEventBatch(events=rest[:2])
        if rest[2:]:
            yield gateway_pb2.RunEventBatch(events=rest[2:])


class _Methods(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Records every method called, the ones the servicer does not have too."""

    def __init__(self) -> None:
        self.called: list[str] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.called.append(details.method.rsplit("/", 1)[-1])
        return await continuation(details)


async def _sequences(
    servicer: _OlderGateway, *, times: int = 1, methods: _Methods | None = None
) -> list[list[int]]:
    server = grpc.aio.server(interceptors=[methods] if methods else None)
    gateway_pb2_grpc.add_MaestroServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with GatewayClient(f"127.0.0.1:{port}", timeout=5) as client:
            return [
                [event.sequence async for event in client.stream_events(RUN)] for _ in range(times)
            ]
    finally:
        await server.stop(None)


async def test_events_arrive_in_batches_from_a_gateway_that_has_them() -> None:
    gateway = _Gateway()  # type: ignore[abstract]  # the rest: UNIMPLEMENTED
    assert await _sequences(gateway) == [[1, 2, 3]]
    assert gateway.calls == ["StreamRunEventBatches"]


async def test_an_older_gateway_is_followed_event_by_event_and_not_asked_again() -> None:
    methods = _Methods()
    older = _OlderGateway()  # type: ignore[abstract]  # the rest: UNIMPLEMENTED
    assert await _sequences(older, times=2, methods=methods) == [[1, 2, 3]] * 2
    # The batched call was refused once (UNIMPLEMENTED); the client remembers.
    assert methods.called == ["StreamRunEventBatches", "StreamRunEvents", "StreamRunEvents"]

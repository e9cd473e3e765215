"""Helpers for reading run events in e2e tests."""

from __future__ import annotations

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc

TERMINAL = {
    gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED,
    gateway_pb2.EVENT_TYPE_RUN_FAILED,
    gateway_pb2.EVENT_TYPE_RUN_CANCELLED,
}


async def collect_events(
    stub: gateway_pb2_grpc.MaestroServiceAsyncStub, run: str, after: int = 0, timeout: float = 60
) -> list[gateway_pb2.RunEvent]:
    """Every event after `after` up to the terminal one (the stream ends there)."""
    request = gateway_pb2.StreamRunEventsRequest(name=run, after_sequence=after)
    return [event async for event in stub.StreamRunEvents(request, timeout=timeout)]


async def collect_batches(
    stub: gateway_pb2_grpc.MaestroServiceAsyncStub, run: str, after: int = 0, timeout: float = 60
) -> list[list[gateway_pb2.RunEvent]]:
    """Like collect_events, by StreamRunEventBatches: the events of each message."""
    request = gateway_pb2.StreamRunEventsRequest(name=run, after_sequence=after)
    return [
        list(batch.events) async for batch in stub.StreamRunEventBatches(request, timeout=timeout)
    ]


async def wait_for_event(
    stub: gateway_pb2_grpc.MaestroServiceAsyncStub,
    run: str,
    event_type: int,
    step_id: str = "",
    timeout: float = 30,
) -> list[gateway_pb2.RunEvent]:
    """Reads the stream until an event of this type (and step) arrives; returns all read."""
    seen = []
    call = stub.StreamRunEvents(gateway_pb2.StreamRunEventsRequest(name=run), timeout=timeout)
    async for event in call:
        seen.append(event)
        if event.type == event_type and (not step_id or event.step_id == step_id):
            call.cancel()
            return seen
    raise AssertionError(f"the run ended without event {event_type} ({step_id}): {seen}")


def event_type_name(event: gateway_pb2.RunEvent) -> str:
    return gateway_pb2.EventType.Name(event.type).removeprefix("EVENT_TYPE_")

"""Drives runs through the public gateway API and timestamps what the client sees."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.core.client import error_from_rpc

if TYPE_CHECKING:
    # Only the type stubs name the async stub; at run time it is a MaestroServiceStub.
    from typing import TypeAlias

    Stub: TypeAlias = gateway_pb2_grpc.MaestroServiceAsyncStub

WORKFLOW = "sdlc-parallel"
REQUIREMENT = "A REST API with user registration and login"
RPC_TIMEOUT = 10.0
CREATE_RETRIES = 5
"""How often observe_run calls CreateRun again when told to retry later (RetryInfo)."""

TERMINAL = frozenset(
    {
        gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED,
        gateway_pb2.EVENT_TYPE_RUN_FAILED,
        gateway_pb2.EVENT_TYPE_RUN_CANCELLED,
    }
)


def freeze_bench_heap() -> None:
    """Takes what this process holds now out of the collector's sight, before a
    measurement.

    The bench client holds floors, LangGraph and every result so far: a full collection
    of that heap paused it for 25-55 ms at a time, charged to whatever was being
    measured (a contender's run, events reaching followers). Frozen, later collections
    walk only what was made since; a contender's own garbage is collected as usual.
    """
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class Received:
    """An event as the client got it."""

    event: gateway_pb2.RunEvent
    wall: float
    """time.time() at receipt: comparable with the event's server `time` (same host)."""
    mono: float
    """time.perf_counter() at receipt: for durations."""
    message: int = 0
    """Which message of the stream brought it (0 for the first): a batch brings several."""


def event_wall_time(event: gateway_pb2.RunEvent) -> float:
    """The event's server timestamp as POSIX seconds.

    The store stamps it inside the write transaction, just before COMMIT.
    """
    return event.time.seconds + event.time.nanos / 1e9


def type_name(event_type: gateway_pb2.EventType.ValueType) -> str:
    """`RUN_SUCCEEDED` for EVENT_TYPE_RUN_SUCCEEDED, and so on."""
    return gateway_pb2.EventType.Name(event_type).removeprefix("EVENT_TYPE_")


def builtin_request(workflow: str = WORKFLOW) -> gateway_pb2.CreateRunRequest:
    """A run of a built-in workflow on the workers' default provider."""
    return gateway_pb2.CreateRunRequest(workflow_name=workflow, requirement=REQUIREMENT)


def bench_request(workflow_yaml: str) -> gateway_pb2.CreateRunRequest:
    """A run of a workflow of `bench` provider steps."""
    return gateway_pb2.CreateRunRequest(
        workflow_yaml=workflow_yaml, requirement="benchmark", provider="bench"
    )


async def create_run(
    stub: Stub, request: gateway_pb2.CreateRunRequest | None = None
) -> gateway_pb2.Run:
    """Creates a run with a fresh request id (so no call is ever deduplicated)."""
    fresh = gateway_pb2.CreateRunRequest()
    fresh.CopyFrom(request or builtin_request())
    fresh.request_id = uuid.uuid4().hex
    return await stub.CreateRun(fresh, timeout=RPC_TIMEOUT)


async def run_error(stub: Stub, run_name: str) -> str:
    """The run's state and error, as GetRun tells them (for a bench failure message)."""
    run = await stub.GetRun(gateway_pb2.GetRunRequest(name=run_name), timeout=RPC_TIMEOUT)
    state = gateway_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_")
    return f"{run_name} ended {state}: {run.error or '(no error recorded)'}"


async def follow(
    stub: Stub,
    run_name: str,
    *,
    timeout: float,
    on_event: Callable[[Received], None] | None = None,
    batched: bool = True,
) -> list[Received]:
    """Reads the run's event stream from the start until it ends after the terminal event.

    Args:
        stub: The gateway.
        run_name: `runs/{id}`.
        timeout: The stream's gRPC deadline.
        on_event: Called for each event as it arrives.
        batched: By StreamRunEventBatches (as the CLI follows a run), or by
            StreamRunEvents, one message per event.
    """
    request = gateway_pb2.StreamRunEventsRequest(name=run_name)
    received: list[Received] = []

    def take(event: gateway_pb2.RunEvent, wall: float, mono: float, message: int) -> None:
        item = Received(event, wall, mono, message)
        received.append(item)
        if on_event is not None:
            on_event(item)

    index = 0  # of the message
    if batched:
        async for batch in stub.StreamRunEventBatches(request, timeout=timeout):
            # Stamp before anything else so the bench's own work is not counted as
            # delivery; the events of one message arrived together.
            wall, mono = time.time(), time.perf_counter()
            for event in batch.events:
                take(event, wall, mono, index)
            index += 1
    else:
        async for event in stub.StreamRunEvents(request, timeout=timeout):
            take(event, time.time(), time.perf_counter(), index)
            index += 1
    return received


@dataclass(frozen=True)
class RunObservation:
    """One run as seen from the client, from CreateRun to its terminal event."""

    create_seconds: float
    """How long CreateRun took to return."""
    created_state: str
    """The run's state in the CreateRun answer."""
    end_to_end_seconds: float
    """From calling CreateRun to receiving the terminal event."""
    server_seconds: float
    """The terminal event's time minus the RUN_CREATED event's time (server clock)."""
    outcome: str
    """The terminal event's type, or `<call> failed: <code>` when a call failed."""
    events: int
    delivery_seconds: tuple[float, ...]
    """For each event committed after the stream was opened: receipt minus its `time`."""
    create_retries: int = 0
    """How often CreateRun was refused with a time to retry after (RESOURCE_EXHAUSTED)."""

    @property
    def succeeded(self) -> bool:
        """Whether the run ended RUN_SUCCEEDED."""
        return self.outcome == "RUN_SUCCEEDED"

    @property
    def create_failed(self) -> bool:
        """Whether the CreateRun call itself failed."""
        return self.outcome.startswith("CreateRun failed")


def _failed_observation(
    call: str, create_seconds: float, err: grpc.aio.AioRpcError, retries: int = 0
) -> RunObservation:
    return RunObservation(
        create_seconds=create_seconds,
        created_state="",
        end_to_end_seconds=float("nan"),
        server_seconds=float("nan"),
        outcome=f"{call} failed: {err.code().name}",
        events=0,
        delivery_seconds=(),
        create_retries=retries,
    )


async def _create_heeding_retry_info(
    stub: Stub, request: gateway_pb2.CreateRunRequest | None
) -> tuple[gateway_pb2.Run | grpc.aio.AioRpcError, int]:
    """CreateRun, called again (same request id) after the wait the server names when it
    answers RESOURCE_EXHAUSTED with a RetryInfo, as a client should, at most
    CREATE_RETRIES times. Returns the run, or the call's last error, and the retries."""
    fresh = gateway_pb2.CreateRunRequest()
    fresh.CopyFrom(request or builtin_request())
    fresh.request_id = uuid.uuid4().hex
    retries = 0
    while True:
        try:
            return await stub.CreateRun(fresh, timeout=RPC_TIMEOUT), retries
        except grpc.aio.AioRpcError as err:
            wait = error_from_rpc(err).retry_after
            refused = err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            if not refused or wait is None or retries == CREATE_RETRIES:
                return err, retries
            retries += 1
            await asyncio.sleep(wait)


async def observe_run(
    stub: Stub, *, timeout: float, request: gateway_pb2.CreateRunRequest | None = None
) -> RunObservation:
    """Creates a run, follows its stream to the end, and reports the timings.

    RPC errors are recorded in the observation (outcome `<call> failed: <code>`), not
    raised, so one failed run is counted instead of ending the bench. A CreateRun
    refused with a time to retry after is retried (see `_create_heeding_retry_info`).
    """
    began = time.perf_counter()
    run, retries = await _create_heeding_retry_info(stub, request)
    if isinstance(run, grpc.aio.AioRpcError):
        return _failed_observation("CreateRun", time.perf_counter() - began, run, retries)
    created = time.perf_counter()
    opened_wall = time.time()
    try:
        received = await follow(stub, run.name, timeout=timeout)
    except grpc.aio.AioRpcError as err:
        return _failed_observation("StreamRunEvents", created - began, err, retries)
    if not received:
        # Cannot happen with a healthy gateway (RUN_CREATED is always there); count it.
        return RunObservation(
            created - began, "", float("nan"), float("nan"), "NO EVENTS", 0, (), retries
        )
    last = received[-1]
    return RunObservation(
        create_seconds=created - began,
        created_state=gateway_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_"),
        end_to_end_seconds=last.mono - began,
        server_seconds=event_wall_time(last.event) - event_wall_time(received[0].event),
        outcome=type_name(last.event.type) if last.event.type in TERMINAL else "NO TERMINAL",
        events=len(received),
        # Events committed before the stream opened are a replay, not a delivery.
        delivery_seconds=tuple(
            r.wall - event_wall_time(r.event)
            for r in received
            if event_wall_time(r.event) >= opened_wall
        ),
        create_retries=retries,
    )

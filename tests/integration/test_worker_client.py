"""The scheduler's side of ExecuteStep and RunStep against a scripted worker over real gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.store import Usage
from scheduler.models import AttemptRequest, CallRequest
from scheduler.retry import FailureKind
from scheduler.worker_client import DispatchFailed, WorkerClient, _send
from tests.support.grpc_calls import RecordsMethods

REFUSAL = "the step's deadline passed while it waited " * 1_000


class _ScriptedWorker(worker_pb2_grpc.WorkerServiceServicer):
    """A worker whose every method fails the call; each script overrides the one it plays."""

    async def ExecuteStep(
        self, requests: AsyncIterator[worker_pb2.ExecuteStepInput], context: Any
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not this script's method")
        yield worker_pb2.ExecuteStepResponse()  # never reached: makes this a generator

    async def RunStep(
        self, request: worker_pb2.ExecuteStepRequest, context: Any
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not this script's method")
        yield worker_pb2.ExecuteStepResponse()  # never reached: makes this a generator

    async def Dispatch(
        self, requests: AsyncIterator[worker_pb2.DispatchInput], context: Any
    ) -> AsyncIterator[worker_pb2.DispatchOutput]:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not this script's method")
        yield worker_pb2.DispatchOutput()  # never reached: makes this a generator


class _CountsMessages(_ScriptedWorker):
    """Reads `expected` messages, then answers with how many it read."""

    def __init__(self, expected: int) -> None:
        self.expected = expected

    async def ExecuteStep(
        self, requests: AsyncIterator[worker_pb2.ExecuteStepInput], context: Any
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        read = 0
        async for _ in requests:
            read += 1
            if read == self.expected:
                break
        yield worker_pb2.ExecuteStepResponse(result=worker_pb2.StepResult(summary=str(read)))


class _AsksTwiceAtOnce(_ScriptedWorker):
    """Asks for two model calls without waiting, then answers once both are granted."""

    def __init__(self) -> None:
        self.grants: list[worker_pb2.CallGrant] = []

    async def ExecuteStep(
        self, requests: AsyncIterator[worker_pb2.ExecuteStepInput], context: Any
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        first = await anext(aiter(requests))
        assert first.WhichOneof("kind") == "start"
        for call in (2, 3):
            yield worker_pb2.ExecuteStepResponse(call_request=worker_pb2.CallRequest(call=call))
        async for message in requests:
            self.grants.append(message.grant)
            if len(self.grants) == 2:
                break
        yield worker_pb2.ExecuteStepResponse(
            result=worker_pb2.StepResult(summary="done", provider="offline", model="offline")
        )


def _attempt(admit_calls: bool) -> AttemptRequest:
    return AttemptRequest(
        run_id="r1",
        step_id="s",
        attempt=3,
        persona="backend_developer",
        requirement="r",
        instructions="",
        dependencies=(),
        provider="offline",
        admit_calls=admit_calls,
    )


async def _ignore(note: str | None, provider: str, usage: Usage | None) -> None:
    """A dispatch's reporter that keeps nothing."""


async def test_grants_answered_at_the_same_moment_all_reach_the_worker() -> None:
    # Two asks answered at the same moment: both grants must reach the worker.
    worker = _AsksTwiceAtOnce()
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(worker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = WorkerClient(f"127.0.0.1:{port}", heartbeat_timeout=10)
    both_asked = asyncio.Event()
    asked: list[int] = []

    async def admit_call(ask: CallRequest) -> str:
        asked.append(ask.call)
        if len(asked) == 2:
            # Set from another task: both grants wake, and are written, in one turn.
            asyncio.get_running_loop().call_soon(both_asked.set)
        await both_asked.wait()
        return REFUSAL

    try:
        result = await client.execute(
            _attempt(True), timeout=10, report=_ignore, admit_call=admit_call
        )
    finally:
        await client.close()
        await server.stop(None)
    assert result.summary == "done"
    assert sorted(grant.call for grant in worker.grants) == [2, 3]
    assert all(grant.refused == REFUSAL for grant in worker.grants)


async def test_messages_written_at_once_on_one_call_are_sent_one_at_a_time() -> None:
    # gRPC takes one outgoing message at a time on a call: a second write while one is
    # being sent fails the whole call (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS, seen with
    # these sizes when each write went straight to call.write).
    messages = 9
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(_CountsMessages(messages), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        call = worker_pb2_grpc.WorkerServiceStub(channel).ExecuteStep(None, timeout=10)
        sending = asyncio.Lock()
        grant = worker_pb2.CallGrant(call=2, refused="x" * 100_000)
        message = worker_pb2.ExecuteStepInput(grant=grant)
        await asyncio.gather(*(_send(call, sending, message) for _ in range(messages)))
        answer = await call.read()
        assert isinstance(answer, worker_pb2.ExecuteStepResponse)
    finally:
        await channel.close(None)
        await server.stop(None)
    assert answer.result.summary == str(messages)


class _RunsSteps(_ScriptedWorker):
    """Answers RunStep with a note and a result (or, `asks`, with an ask for a grant)."""

    def __init__(self, *, asks: bool = False) -> None:
        self.asks = asks
        self.requests: list[worker_pb2.ExecuteStepRequest] = []
        self.cancelled = asyncio.Event()

    async def RunStep(
        self, request: worker_pb2.ExecuteStepRequest, context: Any
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        self.requests.append(request)
        if self.asks:
            yield worker_pb2.ExecuteStepResponse(call_request=worker_pb2.CallRequest(call=2))
            try:
                await asyncio.sleep(30)  # a grant that can never come
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        yield worker_pb2.ExecuteStepResponse(progress=worker_pb2.Progress(message="working"))
        yield worker_pb2.ExecuteStepResponse(result=worker_pb2.StepResult(summary="done"))


@asynccontextmanager
async def _serving(worker: _RunsSteps) -> AsyncIterator[WorkerClient]:
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(worker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = WorkerClient(f"127.0.0.1:{port}", heartbeat_timeout=10)
    try:
        yield client
    finally:
        await client.close()
        await server.stop(None)


async def test_an_attempt_that_takes_no_grants_goes_by_run_step() -> None:
    worker = _RunsSteps()
    notes: list[str | None] = []

    async def report(note: str | None, provider: str, usage: Usage | None) -> None:
        notes.append(note)

    async with _serving(worker) as client:
        result = await client.execute(_attempt(False), timeout=10, report=report)
    assert result.summary == "done"
    assert notes == ["working"]
    assert [(r.attempt.run_id, r.attempt.step_id, r.attempt.attempt) for r in worker.requests] == [
        ("r1", "s", 3)
    ]


async def test_an_ask_for_a_grant_on_run_step_fails_the_dispatch_as_the_platforms() -> None:
    # Nothing could answer it: the dispatch fails at once (retried as a platform
    # fault), and the worker's attempt is cancelled, instead of waiting for a grant.
    worker = _RunsSteps(asks=True)

    async with _serving(worker) as client:
        with pytest.raises(DispatchFailed) as failed:
            await client.execute(_attempt(False), timeout=10, report=_ignore)
        # While the worker still serves: the client itself cancelled the call.
        await asyncio.wait_for(worker.cancelled.wait(), 5)
    assert failed.value.failure.kind is FailureKind.PLATFORM
    assert "takes no grants" in failed.value.failure.message


class _AnswersExecuteStep(_ScriptedWorker):
    async def ExecuteStep(
        self, requests: AsyncIterator[worker_pb2.ExecuteStepInput], context: Any
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        first = await anext(aiter(requests))
        yield worker_pb2.ExecuteStepResponse(
            result=worker_pb2.StepResult(summary=f"attempt {first.start.attempt.attempt}")
        )


async def test_a_worker_without_run_step_gets_every_attempt_by_execute_step() -> None:
    # A worker of an older release (a rollout that updated the scheduler first) does
    # not know RunStep: the attempt goes again by ExecuteStep, and so do later ones.
    worker = _AnswersExecuteStep()
    older_release = grpc.method_handlers_generic_handler(
        "maestro.api.worker.v1.WorkerService",
        {
            "ExecuteStep": grpc.stream_stream_rpc_method_handler(
                worker.ExecuteStep,
                request_deserializer=worker_pb2.ExecuteStepInput.FromString,
                response_serializer=worker_pb2.ExecuteStepResponse.SerializeToString,
            )
        },
    )
    calls = RecordsMethods()
    server = grpc.aio.server(interceptors=[calls])
    server.add_generic_rpc_handlers((older_release,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = WorkerClient(f"127.0.0.1:{port}", heartbeat_timeout=10)

    try:
        first = await client.execute(_attempt(False), timeout=10, report=_ignore)
        second = await client.execute(_attempt(False), timeout=10, report=_ignore)
    finally:
        await client.close()
        await server.stop(None)
    assert (first.summary, second.summary) == ("attempt 3", "attempt 3")
    assert calls.methods == ["RunStep", "ExecuteStep", "ExecuteStep"]

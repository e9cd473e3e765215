"""Attempts over Dispatch streams: the scheduler's WorkerClient against the real worker
servicer and step runner (bench and offline providers) over real gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.core.serving import ErrorInterceptor
from maestro.personas import Persona
from maestro.store import Usage
from persona_service.bench_provider import BenchProvider
from persona_service.call_admission import CallAdmission
from persona_service.models import ProgressCallback, Provider, StepOutput, StepRequest
from persona_service.offline import OfflineProvider
from persona_service.runner import StepRunner
from persona_service.servicer import WorkerServicer
from persona_service.usage import UsageMeter
from scheduler.models import AttemptRequest
from scheduler.retry import FailureKind
from scheduler.worker_client import DispatchFailed, WorkerClient
from tests.support.grpc_calls import RecordsMethods


class _WatchedBench(BenchProvider):
    """The bench provider, noting which steps began and which were cancelled; a step
    told to `hang` ignores its time (as a stuck worker would)."""

    def __init__(self) -> None:
        self.began: list[str] = []
        self.began_event = asyncio.Event()
        self.cancelled: list[str] = []
        self.cancelled_event = asyncio.Event()

    async def run(
        self,
        request: StepRequest,
        persona: Persona,
        *,
        timeout: float,  # noqa: ASYNC109 - the Provider protocol's explicit budget
        progress: ProgressCallback,
        meter: UsageMeter | None = None,
        admission: CallAdmission | None = None,
    ) -> StepOutput:
        self.began.append(request.step_id)
        self.began_event.set()
        try:
            if request.instructions == "hang":
                await asyncio.sleep(3600)
            return await super().run(
                request,
                persona,
                timeout=timeout,
                progress=progress,
                meter=meter,
                admission=admission,
            )
        except asyncio.CancelledError:
            self.cancelled.append(request.step_id)
            self.cancelled_event.set()
            raise


@dataclass
class _Worker:
    servicer: WorkerServicer
    bench: _WatchedBench
    server: grpc.aio.Server
    calls: RecordsMethods
    address: str
    clients: list[WorkerClient] = field(default_factory=list)

    def client(self, streams: int = 2, lifetime: float = 120.0) -> WorkerClient:
        client = WorkerClient(
            self.address,
            heartbeat_timeout=10,
            dispatch_streams=streams,
            dispatch_stream_seconds=lifetime,
        )
        self.clients.append(client)
        return client


@asynccontextmanager
async def _serving() -> AsyncIterator[_Worker]:
    bench = _WatchedBench()
    providers: dict[str, Provider] = {"bench": bench, "offline": OfflineProvider()}
    runner = StepRunner(providers, default_provider="offline", heartbeat_interval=5.0)
    servicer = WorkerServicer(runner, 60)
    calls = RecordsMethods()
    server = grpc.aio.server(interceptors=[calls, ErrorInterceptor()])
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    worker = _Worker(servicer, bench, server, calls, f"127.0.0.1:{port}")
    try:
        yield worker
    finally:
        for client in worker.clients:
            await client.close()
        await server.stop(None)


def _attempt(step_id: str, instructions: str = "", **fields: Any) -> AttemptRequest:
    values: dict[str, Any] = {
        "run_id": "r1",
        "step_id": step_id,
        "attempt": 1,
        "persona": "backend_developer",
        "requirement": "r",
        "instructions": instructions,
        "dependencies": (),
        "provider": "bench",
        **fields,
    }
    return AttemptRequest(**values)


async def _ignore(note: str | None, provider: str, usage: Usage | None) -> None:
    """A dispatch's reporter that keeps nothing."""


async def test_concurrent_attempts_share_a_few_streams_and_each_gets_its_own_answer() -> None:
    async with _serving() as worker:
        client = worker.client(streams=2)
        results = await asyncio.gather(
            *(
                client.execute(_attempt(f"s{i}", "sleep 50ms"), timeout=10, report=_ignore)
                for i in range(8)
            )
        )
    assert [r.files[0][0] for r in results] == [f"bench/s{i}.txt" for i in range(8)]
    assert {r.provider for r in results} == {"bench"}
    assert worker.calls.methods == ["Dispatch", "Dispatch"]


async def test_an_attempt_past_its_timeout_fails_retryable_and_stops_on_the_worker() -> None:
    async with _serving() as worker:
        client = worker.client()
        with pytest.raises(DispatchFailed) as failed:
            await client.execute(_attempt("slow", "hang"), timeout=0.5, report=_ignore)
        await asyncio.wait_for(worker.bench.cancelled_event.wait(), 5)
        # The stream goes on serving.
        after = await client.execute(_attempt("next"), timeout=10, report=_ignore)
    assert failed.value.failure.kind is FailureKind.RETRYABLE
    assert "timed out after 0.5s" in failed.value.failure.message
    assert worker.bench.cancelled == ["slow"]
    assert after.summary


async def test_a_dispatch_cancelled_by_the_scheduler_stops_the_attempt_on_the_worker() -> None:
    async with _serving() as worker:
        client = worker.client()
        task = asyncio.create_task(
            client.execute(_attempt("slow", "sleep 30s"), timeout=60, report=_ignore)
        )
        await asyncio.wait_for(worker.bench.began_event.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(worker.bench.cancelled_event.wait(), 5)
    assert worker.bench.cancelled == ["slow"]


async def test_a_refused_attempt_fails_as_the_same_call_status_would() -> None:
    async with _serving() as worker:
        client = worker.client()
        with pytest.raises(DispatchFailed) as unknown_persona:
            await client.execute(_attempt("a", persona="nobody"), timeout=10, report=_ignore)
        with pytest.raises(DispatchFailed) as unknown_provider:
            await client.execute(_attempt("b", provider="nowhere"), timeout=10, report=_ignore)
        # Neither broke the stream: the next attempt goes through on it.
        ok = await client.execute(_attempt("c"), timeout=10, report=_ignore)
    assert unknown_persona.value.failure.kind is FailureKind.FATAL
    assert "persona" in unknown_persona.value.failure.message
    assert unknown_provider.value.failure.kind is FailureKind.FATAL
    assert ok.summary
    assert worker.calls.methods == ["Dispatch", "Dispatch"]


async def test_a_worker_that_stops_fails_its_attempts_as_the_platforms() -> None:
    async with _serving() as worker:
        client = worker.client()
        task = asyncio.create_task(
            client.execute(_attempt("slow", "sleep 30s"), timeout=60, report=_ignore)
        )
        await asyncio.wait_for(worker.bench.began_event.wait(), 5)
        await worker.server.stop(None)
        with pytest.raises(DispatchFailed) as failed:
            await task
    assert failed.value.failure.kind is FailureKind.PLATFORM


async def test_a_draining_worker_finishes_its_attempts_and_refuses_new_ones() -> None:
    async with _serving() as worker:
        client = worker.client(streams=1)
        running = asyncio.create_task(
            client.execute(_attempt("running", "sleep 300ms"), timeout=10, report=_ignore)
        )
        await asyncio.wait_for(worker.bench.began_event.wait(), 5)
        worker.servicer.drain()
        with pytest.raises(DispatchFailed) as refused:
            await client.execute(_attempt("new"), timeout=10, report=_ignore)
        finished = await running
    assert refused.value.failure.kind is FailureKind.PLATFORM
    assert "draining" in refused.value.failure.message
    assert finished.files[0][0] == "bench/running.txt"
    assert worker.bench.began == ["running"]


async def test_streams_are_renewed_and_a_retired_one_ends_cleanly() -> None:
    async with _serving() as worker:
        client = worker.client(streams=1, lifetime=0.2)
        first = await client.execute(_attempt("first"), timeout=10, report=_ignore)
        await asyncio.sleep(0.3)
        second = await client.execute(_attempt("second"), timeout=10, report=_ignore)
        # The first stream was half-closed once retired; the worker ended it.
        for _ in range(100):
            if len(worker.servicer._streams) == 1:
                break
            await asyncio.sleep(0.02)
        streams_left = len(worker.servicer._streams)
    assert (first.files[0][0], second.files[0][0]) == ("bench/first.txt", "bench/second.txt")
    assert worker.calls.methods == ["Dispatch", "Dispatch"]
    assert streams_left == 1


async def test_an_idle_stream_ends_cleanly_when_its_time_is_up() -> None:
    async with _serving() as worker:
        client = worker.client(streams=1, lifetime=0.2)
        await client.execute(_attempt("only"), timeout=10, report=_ignore)
        assert len(worker.servicer._streams) == 1
        # No attempt comes: the stream retires on its own, half-closes, and the worker
        # ends it (OK) long before its deadline.
        for _ in range(100):
            if not worker.servicer._streams:
                break
            await asyncio.sleep(0.02)
        streams_left = len(worker.servicer._streams)
    assert streams_left == 0


async def test_a_worker_without_dispatch_gets_every_attempt_by_run_step() -> None:
    # A worker of an older release does not know Dispatch: the attempt goes again by
    # RunStep, and so do later ones.
    async with _serving() as current:
        servicer = current.servicer
    older_release = grpc.method_handlers_generic_handler(
        "maestro.api.worker.v1.WorkerService",
        {
            "RunStep": grpc.unary_stream_rpc_method_handler(
                servicer.RunStep,
                request_deserializer=worker_pb2.ExecuteStepRequest.FromString,
                response_serializer=worker_pb2.ExecuteStepResponse.SerializeToString,
            )
        },
    )
    calls = RecordsMethods()
    server = grpc.aio.server(interceptors=[calls, ErrorInterceptor()])
    server.add_generic_rpc_handlers((older_release,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = WorkerClient(f"127.0.0.1:{port}", heartbeat_timeout=10, dispatch_streams=2)
    try:
        first = await client.execute(_attempt("a"), timeout=10, report=_ignore)
        second = await client.execute(_attempt("b"), timeout=10, report=_ignore)
    finally:
        await client.close()
        await server.stop(None)
    assert (first.files[0][0], second.files[0][0]) == ("bench/a.txt", "bench/b.txt")
    assert calls.methods == ["Dispatch", "RunStep", "RunStep"]


async def test_the_worker_refuses_a_malformed_attempt_on_its_key_and_serves_the_rest() -> None:
    async with _serving() as worker:
        channel = grpc.aio.insecure_channel(worker.address)
        try:
            call = worker_pb2_grpc.WorkerServiceStub(channel).Dispatch(None, timeout=10)
            good = worker_pb2.DispatchStart(
                attempt=worker_pb2.ExecuteStepRequest(
                    attempt=worker_pb2.StepAttempt(run_id="r", step_id="good", attempt=1),
                    persona="backend_developer",
                    requirement="r",
                    provider="bench",
                )
            )
            good.timeout.seconds = 10
            untimed = worker_pb2.DispatchStart()
            untimed.CopyFrom(good)
            untimed.ClearField("timeout")
            await call.write(worker_pb2.DispatchInput(key=1, start=untimed))
            await call.write(worker_pb2.DispatchInput(key=2))
            await call.write(worker_pb2.DispatchInput(key=3, start=good))
            await call.write(worker_pb2.DispatchInput(key=99, cancel=True))  # unknown: ignored
            await call.done_writing()
            outputs = [output async for output in call]
            code = await call.code()
        finally:
            await channel.close(None)
    errors = {o.key: (o.error.code, o.error.message) for o in outputs if o.HasField("error")}
    assert set(errors) == {1, 2}
    assert errors[1][0] == "INVALID_ARGUMENT" and "timeout" in errors[1][1]
    assert errors[2][0] == "INVALID_ARGUMENT" and "kind" in errors[2][1]
    finals = [o for o in outputs if o.key == 3 and o.response.WhichOneof("kind") == "result"]
    assert len(finals) == 1
    assert code == grpc.StatusCode.OK  # after the scheduler's side ended and key 3 answered

"""The real persona worker (servicer, runner, Anthropic provider, SDK) on 127.0.0.1:0,
talking to the fake Anthropic API; tests call it over a real gRPC channel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.core.serving import ErrorInterceptor
from persona_service.llm import AnthropicProvider
from persona_service.models import Provider
from persona_service.offline import OfflineProvider
from persona_service.runner import StepRunner
from persona_service.servicer import WorkerServicer
from tests.fakes import FakeAnthropic

API_KEY = "sk-ant-test-key"


@dataclass
class Outcome:
    """Everything one ExecuteStep call streamed back."""

    messages: list[worker_pb2.ExecuteStepResponse]

    @property
    def final(self) -> worker_pb2.ExecuteStepResponse:
        return self.messages[-1]

    @property
    def result(self) -> worker_pb2.StepResult:
        assert self.final.WhichOneof("kind") == "result", self.final
        return self.final.result

    @property
    def failure(self) -> worker_pb2.StepFailure:
        assert self.final.WhichOneof("kind") == "failure", self.final
        return self.final.failure

    @property
    def notes(self) -> list[str]:
        return [m.progress.message for m in self.messages if m.WhichOneof("kind") == "progress"]

    @property
    def call_requests(self) -> list[worker_pb2.CallRequest]:
        return [m.call_request for m in self.messages if m.WhichOneof("kind") == "call_request"]

    @property
    def heartbeats(self) -> list[worker_pb2.Heartbeat]:
        return [m.heartbeat for m in self.messages if m.WhichOneof("kind") == "heartbeat"]

    def transcript(self) -> list[dict[str, Any]]:
        final = self.final
        raw = (
            final.result.transcript
            if final.WhichOneof("kind") == "result"
            else final.failure.transcript
        )
        return [json.loads(line) for line in raw.decode().splitlines()]

    def files(self) -> dict[str, str]:
        return {f.path: f.content.decode() for f in self.result.files}


class Worker:
    """A stub over a real channel to the in-process worker."""

    def __init__(self, stub: worker_pb2_grpc.WorkerServiceAsyncStub) -> None:
        self._stub = stub

    async def execute(
        self,
        request: worker_pb2.ExecuteStepRequest,
        timeout: float = 30.0,
        *,
        refuse_from_call: int = 0,
    ) -> Outcome:
        """Runs an attempt as the scheduler does: the attempt first, then a grant for
        each call the worker asks to make (a refusal from `refuse_from_call` on)."""
        call = self._stub.ExecuteStep(timeout=timeout)  # type: ignore[call-arg]
        await call.write(worker_pb2.ExecuteStepInput(start=request))
        messages = []
        async for message in call:
            messages.append(message)
            if message.WhichOneof("kind") == "call_request":
                number = message.call_request.call
                refused = "no capacity in this test" if 0 < refuse_from_call <= number else ""
                grant = worker_pb2.CallGrant(call=number, refused=refused)
                await call.write(worker_pb2.ExecuteStepInput(grant=grant))
        assert await call.code() == grpc.StatusCode.OK
        return Outcome(messages)

    async def run_step(
        self, request: worker_pb2.ExecuteStepRequest, timeout: float = 30.0
    ) -> Outcome:
        """Runs an attempt that waits for no grants as the scheduler does: RunStep."""
        call = self._stub.RunStep(request, timeout=timeout)
        messages = [message async for message in call]
        assert await call.code() == grpc.StatusCode.OK
        return Outcome(messages)


def step_request(
    persona: str,
    *,
    step_id: str = "step",
    requirement: str = "A small todo API with a client.",
    workspace: dict[str, str] | None = None,
    **fields: Any,
) -> worker_pb2.ExecuteStepRequest:
    """An ExecuteStepRequest for the anthropic provider."""
    return worker_pb2.ExecuteStepRequest(
        attempt=worker_pb2.StepAttempt(run_id="run-1", step_id=step_id, attempt=1),
        persona=persona,
        requirement=requirement,
        provider="anthropic",
        workspace=[
            worker_pb2.File(path=p, content=c.encode()) for p, c in (workspace or {}).items()
        ],
        **fields,
    )


@asynccontextmanager
async def running_worker(
    fake: FakeAnthropic,
    *,
    heartbeat_interval: float = 5.0,
    base_url: str | None = None,
    **options: Any,
) -> AsyncIterator[Worker]:
    """Serves a worker whose anthropic provider calls `fake` (options go to the provider)."""
    anthropic = AnthropicProvider(API_KEY, base_url=base_url or fake.base_url, **options)
    providers: dict[str, Provider] = {"anthropic": anthropic, "offline": OfflineProvider()}
    runner = StepRunner(
        providers,
        default_provider="anthropic",
        heartbeat_interval=heartbeat_interval,
        prices=anthropic.prices,
    )
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(runner, 60), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Worker(worker_pb2_grpc.WorkerServiceStub(channel))
    finally:
        await channel.close(None)
        await server.stop(None)
        await anthropic.aclose()

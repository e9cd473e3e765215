"""The worker's gRPC API: proto in, StepRunner, proto out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.core.log_setup import run_id_var, step_id_var
from persona_service.convert import (
    failure_to_proto,
    output_to_proto,
    request_from_proto,
    usage_to_proto,
)
from persona_service.models import StepRequest
from persona_service.runner import Failure, Heartbeat, Note, StepRunner

Context = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger(__name__)


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, runner: StepRunner, max_step_seconds: float) -> None:
        self._runner = runner
        self._max_step_seconds = max_step_seconds

    async def ExecuteStep(
        self, request: worker_pb2.ExecuteStepRequest, context: Context
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        step = request_from_proto(request)
        run_id_var.set(step.run_id)
        step_id_var.set(step.step_id)
        remaining = context.time_remaining()
        budget = self._max_step_seconds if remaining is None else remaining
        # One line at each end of an attempt (run and step ids ride in the log context):
        # with several worker pods, their logs say which pod did which attempt.
        log.info("attempt %d of step %s started (%s)", step.attempt, step.step_id, step.persona)
        outcome = "ended without a result"
        try:
            async for response in self._responses(step, budget):
                kind = response.WhichOneof("kind")
                if kind == "result":
                    outcome = "succeeded"
                elif kind == "failure":
                    failure = response.failure
                    name = worker_pb2.FailureKind.Name(failure.kind)
                    outcome = f"failed ({name}, {failure.reason or 'no reason code'})"
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "was cancelled"
            raise
        finally:
            log.info("attempt %d of step %s %s", step.attempt, step.step_id, outcome)

    async def _responses(
        self, step: StepRequest, budget: float
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        async for item in self._runner.run(step, time_remaining=budget):
            if isinstance(item, Heartbeat):
                yield worker_pb2.ExecuteStepResponse(
                    heartbeat=worker_pb2.Heartbeat(usage=usage_to_proto(item.usage))
                )
            elif isinstance(item, Note):
                yield worker_pb2.ExecuteStepResponse(
                    progress=worker_pb2.Progress(
                        message=item.message,
                        provider=item.provider,
                        usage=usage_to_proto(item.usage),
                    )
                )
            elif isinstance(item, Failure):
                yield worker_pb2.ExecuteStepResponse(failure=failure_to_proto(item))
            else:
                yield worker_pb2.ExecuteStepResponse(result=output_to_proto(item))

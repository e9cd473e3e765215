"""The worker's gRPC API: proto in, StepRunner, proto out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.core.errors import InvalidArgument, MaestroError
from maestro.core.log_setup import run_id_var, step_id_var
from persona_service.call_admission import CallAdmission, CallAsk
from persona_service.convert import (
    call_ask_to_proto,
    failure_to_proto,
    output_to_proto,
    request_from_proto,
    usage_to_proto,
)
from persona_service.dispatch import DispatchStream
from persona_service.models import StepRequest
from persona_service.runner import Failure, Heartbeat, Note, StepRunner

Context = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger(__name__)

# The scheduler sends the attempt as it opens the stream.
FIRST_MESSAGE_SECONDS = 10.0


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, runner: StepRunner, max_step_seconds: float) -> None:
        self._runner = runner
        self._max_step_seconds = max_step_seconds
        self._streams: set[DispatchStream] = set()
        self._draining = False

    async def ExecuteStep(
        self, requests: AsyncIterator[worker_pb2.ExecuteStepInput], context: Context
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        request = await _first_message(requests)
        admission = CallAdmission() if request.admit_calls else None
        grants = (
            asyncio.create_task(_read_grants(requests, admission), name="grants")
            if admission is not None
            else None
        )
        try:
            async for response in self._attempt(
                request, _budget(context, self._max_step_seconds), admission
            ):
                yield response
        finally:
            if grants is not None:
                grants.cancel()

    async def RunStep(
        self, request: worker_pb2.ExecuteStepRequest, context: Context
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        if request.admit_calls:
            raise InvalidArgument(
                "admit_calls", "an attempt that waits for call grants needs ExecuteStep"
            )
        async for response in self._attempt(
            request, _budget(context, self._max_step_seconds), None
        ):
            yield response

    async def Dispatch(
        self, requests: AsyncIterator[worker_pb2.DispatchInput], context: Context
    ) -> AsyncIterator[worker_pb2.DispatchOutput]:
        stream = DispatchStream(
            lambda request, budget: self._attempt(request, budget, None),
            max_step_seconds=self._max_step_seconds,
            stream_seconds_left=context.time_remaining,
        )
        if self._draining:
            stream.drain()
        self._streams.add(stream)
        try:
            async for output in stream.serve(requests):
                yield output
        finally:
            self._streams.discard(stream)

    def drain(self) -> None:
        """The worker stops: its Dispatch streams take no new attempt and end once their
        attempts in flight have answered (single calls end by themselves)."""
        self._draining = True
        for stream in self._streams:
            stream.drain()

    async def _attempt(
        self,
        request: worker_pb2.ExecuteStepRequest,
        budget: float,
        admission: CallAdmission | None,
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        """Runs one attempt within `budget` seconds: its progress, then its result or
        failure."""
        step = request_from_proto(request)
        run_id_var.set(step.run_id)
        step_id_var.set(step.step_id)
        # One line at each end of an attempt (run and step ids ride in the log context):
        # with several worker pods, their logs say which pod did which attempt.
        log.info("attempt %d of step %s started (%s)", step.attempt, step.step_id, step.persona)
        outcome = "ended without a result"
        try:
            async for response in self._responses(step, budget, admission):
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
        self, step: StepRequest, budget: float, admission: CallAdmission | None
    ) -> AsyncIterator[worker_pb2.ExecuteStepResponse]:
        async for item in self._runner.run(step, time_remaining=budget, admission=admission):
            if isinstance(item, CallAsk):
                yield worker_pb2.ExecuteStepResponse(call_request=call_ask_to_proto(item))
            elif isinstance(item, Heartbeat):
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


def _budget(context: Context, cap: float) -> float:
    """A single call's seconds: its deadline, or the worker's cap without one."""
    remaining = context.time_remaining()
    return cap if remaining is None else remaining


async def _first_message(
    requests: AsyncIterator[worker_pb2.ExecuteStepInput],
) -> worker_pb2.ExecuteStepRequest:
    """The attempt, which the scheduler sends as the stream opens.

    Raises:
        InvalidArgument: the stream ended, or began with something else, or nothing
            came within FIRST_MESSAGE_SECONDS.
    """
    try:
        async with asyncio.timeout(FIRST_MESSAGE_SECONDS):
            first = await anext(aiter(requests), None)
    except TimeoutError:
        raise InvalidArgument(
            "start", f"no attempt within {FIRST_MESSAGE_SECONDS:g}s of opening the stream"
        ) from None
    if first is None or first.WhichOneof("kind") != "start":
        raise InvalidArgument("start", "the stream's first message must be the attempt")
    return first.start


async def _read_grants(
    requests: AsyncIterator[worker_pb2.ExecuteStepInput], admission: CallAdmission
) -> None:
    """Hands the scheduler's grants to the attempt until its side of the stream ends."""
    why = "the scheduler's side of the stream ended"
    try:
        async for message in requests:
            if message.WhichOneof("kind") == "grant":
                admission.granted(message.grant.call, message.grant.refused)
            else:
                log.warning("an attempt's stream sent a second `start`; ignored")
    except MaestroError as err:  # an undecodable message: no grant can be trusted now
        why = f"the scheduler's stream broke: {err.message}"
        log.warning("%s", why)
    finally:
        admission.end(why)

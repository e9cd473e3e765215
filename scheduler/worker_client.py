"""Calls persona workers: one ExecuteStep stream per attempt, with a deadline and a
heartbeat watchdog."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc

from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.core.client import insecure_channel, mapped_rpc_errors
from maestro.core.errors import DeadlineExceeded, Internal, Unavailable
from scheduler.convert import (
    attempt_request_to_proto,
    error_from_failure,
    step_result_from_proto,
)
from scheduler.models import AttemptRequest, AttemptResult

log = logging.getLogger(__name__)

# grpc.aio's end-of-stream sentinel (missing from the type stubs).
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]


class AttemptLost(Unavailable):
    """The worker went silent for longer than the heartbeat timeout."""


class WorkerClient:
    """A channel to one worker pool (a Kubernetes Service address, or one process)."""

    def __init__(self, address: str, *, heartbeat_timeout: float) -> None:
        self._address = address
        self._channel = insecure_channel(address)
        self._stub = worker_pb2_grpc.WorkerServiceStub(self._channel)
        self._heartbeat_timeout = heartbeat_timeout

    async def close(self) -> None:
        await self._channel.close(None)

    async def execute(
        self,
        request: AttemptRequest,
        *,
        timeout: float,
        on_progress: Callable[[str, str], Awaitable[None]],
        on_heartbeat: Callable[[], Awaitable[None]],
    ) -> AttemptResult:
        """Runs one attempt on a worker.

        Raises:
            MaestroError: the work's failure (from the worker's StepFailure message), the
                platform's (mapped from a status code), AttemptLost when the worker went
                silent, DeadlineExceeded past `timeout`.
        """
        call = self._stub.ExecuteStep(
            attempt_request_to_proto(request),
            timeout=timeout,
            metadata=(("x-request-id", f"{request.run_id}/{request.step_id}/{request.attempt}"),),
        )
        try:
            with mapped_rpc_errors(f"worker {self._address}"):
                while True:
                    try:
                        message = await asyncio.wait_for(call.read(), self._heartbeat_timeout)
                    except TimeoutError:
                        raise AttemptLost(
                            f"worker {self._address} sent nothing for "
                            f"{self._heartbeat_timeout:.0f}s"
                        ) from None
                    if message is EOF:
                        raise Internal("the worker ended the stream without a result")
                    assert isinstance(message, worker_pb2.ExecuteStepResponse)
                    kind = message.WhichOneof("kind")
                    if kind == "result":
                        return step_result_from_proto(message.result)
                    if kind == "failure":
                        raise error_from_failure(message.failure)
                    if kind == "progress":
                        await on_progress(message.progress.message, message.progress.provider)
                    else:
                        await on_heartbeat()
        except DeadlineExceeded as err:
            raise DeadlineExceeded(f"step timed out after {timeout:.0f}s") from err
        finally:
            # Cancels the RPC on the worker too when we leave early (lost, cancelled).
            call.cancel()

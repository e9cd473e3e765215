"""Calls persona workers: each dispatch as a message on one of a few Dispatch streams
per pool (scheduler/dispatch_streams.py), or as an ExecuteStep call when the attempt
waits for call grants, with a deadline and a heartbeat watchdog, routed to the
persona's worker pool. A pool whose workers do not serve Dispatch (an older release)
gets one RunStep call per attempt.

What comes back is sorted here into the two kinds of failure the scheduler keeps apart
(scheduler/retry.py): a gRPC status that says the worker could not be reached, was
draining, or went silent is the platform's; anything the worker reports about the work
(a model error, an attempt timeout) is the work's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import grpc

from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.core.client import error_from_rpc, insecure_channel
from maestro.core.errors import Code
from maestro.core.tracing import ATTEMPT, RUN_ID, STEP_ID, span, trace_carrier
from maestro.store import Usage
from scheduler.capacity import RateLimitReport
from scheduler.convert import (
    attempt_request_to_proto,
    call_request_from_proto,
    failure_capacity_from_proto,
    failure_from_proto,
    step_result_from_proto,
    usage_from_proto,
)
from scheduler.dispatch_streams import EOF, AttemptRefused, DispatchStreams
from scheduler.models import AttemptRequest, AttemptResult, CallRequest
from scheduler.retry import Failure, FailureKind

log = logging.getLogger(__name__)


StreamCall = grpc.aio.StreamStreamCall[worker_pb2.ExecuteStepInput, worker_pb2.ExecuteStepResponse]

Read = Callable[[], Awaitable[worker_pb2.ExecuteStepResponse | object]]
"""The attempt's next answer from the worker, or EOF (an ExecuteStep or a RunStep call,
or an attempt on a Dispatch stream: the worker's answers are the same)."""

DEFAULT_POOL = "*"

# The work's failures come as StepFailure messages; a status code means the worker
# could not serve the call (the platform's fault), except these.
_STATUS_KINDS = {
    # We sent a request the worker cannot take: sending it again cannot help.
    Code.INVALID_ARGUMENT: FailureKind.FATAL,
    # The worker cannot serve it as configured (a provider it does not have).
    Code.FAILED_PRECONDITION: FailureKind.FATAL,
    # A bug in the worker: worth another attempt, but it consumes one.
    Code.INTERNAL: FailureKind.RETRYABLE,
}


class DispatchFailed(Exception):
    """A dispatch ended without a result; `failure` says whose fault and what next."""

    def __init__(
        self,
        failure: Failure,
        usage: Usage | None = None,
        rate_limits: RateLimitReport | None = None,
        calls: int | None = None,
    ) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.usage = usage
        self.rate_limits = rate_limits
        self.calls = calls
        """Model calls the attempt made (None: unknown, the worker did not say)."""


def parse_pools(spec: str, default_address: str) -> dict[str, str]:
    """`persona=ADDRESS,...,*=ADDRESS` -> {persona or '*': address}.

    Raises:
        ValueError: a malformed entry, or no pool for personas not named.
    """
    pools: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        persona, sep, address = entry.partition("=")
        if not sep or not persona.strip() or not address.strip():
            raise ValueError(f"worker pool entry {entry!r} is not PERSONA=ADDRESS")
        pools[persona.strip()] = address.strip()
    if default_address and DEFAULT_POOL not in pools:
        pools[DEFAULT_POOL] = default_address
    if DEFAULT_POOL not in pools:
        raise ValueError("no default worker pool: set worker_address or a '*=ADDRESS' pool")
    return pools


Reporter = Callable[[str | None, str, Usage | None], Awaitable[None]]
"""Called with (progress note or None for a heartbeat, provider, usage so far)."""

CallAdmitter = Callable[[CallRequest], Awaitable[str]]
"""Waits until the worker's next model call may go; returns "" (granted) or why not."""


class WorkerClient:
    """A channel to one worker pool: round-robin over the addresses its name resolves to
    (a Kubernetes headless Service), or one process."""

    def __init__(
        self,
        address: str,
        *,
        heartbeat_timeout: float,
        dispatch_streams: int = 0,
        dispatch_stream_seconds: float = 120.0,
    ) -> None:
        """
        Args:
            dispatch_streams: Dispatch streams kept open (0: a RunStep call per attempt).
            dispatch_stream_seconds: how long a stream takes new attempts.
        """
        self.address = address
        self._channel = insecure_channel(address, round_robin=True)
        self._stub = worker_pb2_grpc.WorkerServiceStub(self._channel)
        self._heartbeat_timeout = heartbeat_timeout
        self._streams = (
            DispatchStreams(self._stub, count=dispatch_streams, lifetime=dispatch_stream_seconds)
            if dispatch_streams > 0
            else None
        )
        """None once a worker of this pool did not know Dispatch (an older release, in
        a rollout that updated the scheduler first): attempts then go by RunStep."""
        self._run_step = True
        """False once a worker of this pool did not know RunStep (an older release, in
        a rollout that updated the scheduler first): the pool's attempts then all go by
        ExecuteStep, which every release serves."""

    async def close(self) -> None:
        if self._streams is not None:
            self._streams.close()
        await self._channel.close(None)

    async def execute(
        self,
        request: AttemptRequest,
        *,
        timeout: float,
        report: Reporter,
        admit_call: CallAdmitter | None = None,
    ) -> AttemptResult:
        """Runs one dispatch of an attempt on a worker of this pool.

        Args:
            admit_call: Answers the worker's asks for model calls (`admit_calls`).

        Raises:
            DispatchFailed: with the failure's kind (platform or work) and message.
        """
        attempt = attempt_request_to_proto(request)
        request_id = f"{request.run_id}/{request.step_id}/{request.attempt}"
        streams = self._streams
        if not request.admit_calls and streams is not None:
            try:
                return await self._on_stream(streams, request, attempt, request_id, timeout, report)
            except DispatchFailed as failed:
                if not _unimplemented(failed):
                    raise
            # The worker never began the attempt: it goes again, by RunStep (as do the
            # other attempts that were on the stream).
            if self._streams is streams:
                streams.close()
                self._streams = None
                log.warning(
                    "a worker at %s does not serve Dispatch (an older release): this "
                    "pool's attempts go by RunStep from now on",
                    self.address,
                )
        metadata = (("x-request-id", request_id),)
        if not request.admit_calls and self._run_step:
            # Nothing follows the attempt: RunStep sends it as the call opens, where a
            # stream of requests (ExecuteStep) costs a write of its own here and a
            # request reader on the worker (on W1, RunStep takes a tenth to a fifth off
            # the worker's CPU per step, and 6-10% off this process's).
            unary = self._stub.RunStep(attempt, timeout=timeout, metadata=metadata)
            try:
                return await self._answer(
                    unary.read, unary.cancel, timeout, report, on_ask=_unasked
                )
            except DispatchFailed as failed:
                if not _unimplemented(failed):
                    raise
            # The worker never began the attempt: it goes again, by ExecuteStep.
            self._run_step = False
            log.warning(
                "a worker at %s does not serve RunStep (an older release): this pool's "
                "attempts go by ExecuteStep from now on",
                self.address,
            )
        # Our side of the stream is written directly (call.write), not from a request
        # iterator: an iterator costs a task and a queue per dispatch. The attempt goes
        # first; the grant tasks write the rest and end with the call.
        call = self._stub.ExecuteStep(
            None,  # no request iterator: the messages are written below
            timeout=timeout,
            metadata=metadata,
        )
        granting: set[asyncio.Task[None]] = set()
        # gRPC takes one message at a time on a call: grants answered at once queue here.
        sending = asyncio.Lock()

        def on_ask(ask: CallRequest) -> None:
            # Answered in a task: heartbeats keep coming while the call waits.
            task = asyncio.create_task(_grant(call, sending, ask, admit_call))
            granting.add(task)
            task.add_done_callback(granting.discard)

        try:
            opening = _send(call, sending, worker_pb2.ExecuteStepInput(start=attempt))
            return await self._answer(
                call.read, call.cancel, timeout, report, on_ask=on_ask, opening=opening
            )
        finally:
            for task in granting:
                task.cancel()

    async def _on_stream(
        self,
        streams: DispatchStreams,
        request: AttemptRequest,
        attempt: worker_pb2.ExecuteStepRequest,
        request_id: str,
        timeout: float,
        report: Reporter,
    ) -> AttemptResult:
        """Runs the attempt on a Dispatch stream, in a span of its own (a call would
        have had one from the gRPC instrumentation)."""
        attributes: dict[str, str | int] = {
            RUN_ID: request.run_id,
            STEP_ID: request.step_id,
            ATTEMPT: request.attempt,
        }
        with span("maestro.dispatch", attributes):
            start = worker_pb2.DispatchStart(
                attempt=attempt,
                request_id=request_id,
                trace_context=trace_carrier(),
            )
            start.timeout.FromTimedelta(timedelta(seconds=timeout))
            sent = streams.add(start, timeout)
            try:
                # The stream has no deadline of its own per attempt: this is it.
                async with asyncio.timeout(timeout):
                    return await self._answer(
                        sent.read,
                        lambda: sent.stop(answered=False),
                        timeout,
                        report,
                        on_ask=_unasked,
                        opening=sent.send(),
                    )
            except TimeoutError:
                raise DispatchFailed(_timed_out(timeout)) from None
            finally:
                sent.stop(answered=True)

    async def _answer(
        self,
        read: Read,
        stop: Callable[[], object],
        timeout: float,
        report: Reporter,
        *,
        on_ask: Callable[[CallRequest], None],
        opening: Awaitable[None] | None = None,
    ) -> AttemptResult:
        """Reads the worker's messages until the attempt's result or failure.

        Args:
            read: The next message (or EOF).
            stop: Stops the attempt on the worker (called when we leave early).
            opening: What must be sent before anything can come back (awaited first).

        Raises:
            DispatchFailed: with the failure's kind (platform or work) and message.
        """
        answered = False
        try:
            if opening is not None:
                await opening
            while True:
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
                    # a cancellation that lands as a message arrives, and a cancelled run
                    # would then wait for its steps to finish.
                    async with asyncio.timeout(self._heartbeat_timeout):
                        message = await read()
                except TimeoutError:
                    raise DispatchFailed(
                        Failure(
                            FailureKind.PLATFORM,
                            f"worker {self.address} sent nothing for {self._heartbeat_timeout:g}s",
                        )
                    ) from None
                if message is EOF:
                    raise DispatchFailed(
                        Failure(
                            FailureKind.PLATFORM,
                            f"worker {self.address} ended the stream without a result",
                        )
                    )
                assert isinstance(message, worker_pb2.ExecuteStepResponse)
                kind = message.WhichOneof("kind")
                if kind == "result":
                    answered = True
                    return step_result_from_proto(message.result)
                if kind == "failure":
                    answered = True
                    raise DispatchFailed(
                        *failure_from_proto(message.failure),
                        *failure_capacity_from_proto(message.failure),
                    )
                if kind == "call_request":
                    on_ask(call_request_from_proto(message.call_request))
                elif kind == "progress":
                    progress = message.progress
                    usage = usage_from_proto(progress.usage) if progress.HasField("usage") else None
                    await report(progress.message, progress.provider, usage)
                else:
                    beat = message.heartbeat
                    await report(
                        None, "", usage_from_proto(beat.usage) if beat.HasField("usage") else None
                    )
        except grpc.aio.AioRpcError as err:
            raise DispatchFailed(self._failure(err, timeout)) from err
        except AttemptRefused as refused:
            raise DispatchFailed(self._refusal(refused, timeout)) from refused
        finally:
            if not answered:
                # Stops the attempt on the worker too when we leave early (lost,
                # cancelled). After an answer the worker ends it itself.
                stop()

    def _failure(self, err: grpc.aio.AioRpcError, timeout: float) -> Failure:
        mapped = error_from_rpc(err, f"worker {self.address}")
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return _timed_out(timeout)
        kind = _STATUS_KINDS.get(mapped.code, FailureKind.PLATFORM)
        return Failure(kind, mapped.message, mapped.retry_after)

    def _refusal(self, refused: AttemptRefused, timeout: float) -> Failure:
        """The failure a Dispatch attempt's status means: as a call's would."""
        if refused.code is Code.DEADLINE_EXCEEDED:
            return _timed_out(timeout)
        message = f"worker {self.address}: {refused.message}"
        return Failure(_STATUS_KINDS.get(refused.code, FailureKind.PLATFORM), message)


def _timed_out(timeout: float) -> Failure:
    return Failure(FailureKind.RETRYABLE, f"the attempt timed out after {timeout:g}s")


def _unimplemented(failed: DispatchFailed) -> bool:
    """Whether the dispatch failed because the worker does not know the method."""
    cause = failed.__cause__
    return isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.UNIMPLEMENTED


def _unasked(ask: CallRequest) -> None:
    """A worker asked for a call grant on an attempt that takes none (RunStep)."""
    raise DispatchFailed(
        Failure(
            FailureKind.PLATFORM,
            f"the worker asked to admit call {ask.call} of an attempt that takes no grants",
        )
    )


async def _grant(
    call: StreamCall, sending: asyncio.Lock, ask: CallRequest, admit_call: CallAdmitter | None
) -> None:
    """Admits the worker's next call and tells it so (or why not).

    A call that has ended meanwhile needs no answer: the dispatch is over, and the
    reader reports how it ended.
    """
    try:
        refused = await admit_call(ask) if admit_call is not None else ""
    except Exception as err:  # the worker must hear an answer, not wait for ever
        log.exception("admitting call %d failed", ask.call)
        refused = f"the scheduler could not admit call {ask.call}: {err}"
    grant = worker_pb2.CallGrant(call=ask.call, refused=refused)
    try:
        await _send(call, sending, worker_pb2.ExecuteStepInput(grant=grant))
    except grpc.aio.AioRpcError as err:
        log.debug("grant for call %d not sent: the call ended (%s)", ask.call, err.code())


async def _send(
    call: StreamCall, sending: asyncio.Lock, message: worker_pb2.ExecuteStepInput
) -> None:
    """Writes one message of our side of the stream, one writer at a time (`sending`).

    A call that has already ended takes nothing more: the message is dropped (with a
    debug line), and reading the call reports how it ended.

    Raises:
        grpc.aio.AioRpcError: the call failed while the message was being sent.
    """
    try:
        async with sending:
            await call.write(message)
    except asyncio.InvalidStateError as err:
        log.debug("a message for a call that already ended was dropped: %s", err)


class WorkerPools:
    """The worker pools, by persona (`*` for every persona not named)."""

    def __init__(
        self,
        pools: dict[str, str],
        *,
        heartbeat_timeout: float,
        api_keys: dict[str, str] | None = None,
        dispatch_streams: int = 0,
        dispatch_stream_seconds: float = 120.0,
    ) -> None:
        self._clients = {
            name: WorkerClient(
                address,
                heartbeat_timeout=heartbeat_timeout,
                dispatch_streams=dispatch_streams,
                dispatch_stream_seconds=dispatch_stream_seconds,
            )
            for name, address in pools.items()
        }
        self._api_keys = api_keys or {}

    def pool_for(self, persona: str) -> str:
        return persona if persona in self._clients else DEFAULT_POOL

    def api_key_of(self, persona: str) -> str:
        """The label of the API key the persona's workers call with ("": the one key)."""
        keys = self._api_keys
        return keys.get(self.pool_for(persona)) or keys.get(DEFAULT_POOL, "")

    def client(self, pool: str) -> WorkerClient:
        return self._clients[pool]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

"""The worker's side of a Dispatch stream: many attempts over one call (worker.proto).

Each attempt the scheduler sends runs in a task of its own, exactly as a RunStep call
would run it; whatever it yields goes back keyed, one message at a time, through one
queue (gRPC takes one write at a time on a call). The stream ends when nothing more
can come: the scheduler ended its side, or the worker drains, and no attempt is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from maestro.api.worker.v1 import worker_pb2
from maestro.core.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    MaestroError,
    Unavailable,
)
from maestro.core.log_setup import request_id_var
from maestro.core.tracing import join_trace

log = logging.getLogger(__name__)

Attempt = Callable[
    [worker_pb2.ExecuteStepRequest, float], AsyncIterator[worker_pb2.ExecuteStepResponse]
]
"""Runs one attempt within a budget in seconds (the servicer's, as for RunStep)."""

_END = None
"""Queued when the stream has nothing more to send."""


class DispatchStream:
    """One Dispatch call of the scheduler's."""

    def __init__(
        self,
        attempt: Attempt,
        *,
        max_step_seconds: float,
        stream_seconds_left: Callable[[], float | None],
    ) -> None:
        self._attempt = attempt
        self._max_step_seconds = max_step_seconds
        self._stream_seconds_left = stream_seconds_left
        self._outputs: asyncio.Queue[worker_pb2.DispatchOutput | None] = asyncio.Queue()
        self._attempts: dict[int, asyncio.Task[None]] = {}
        self._closing = False
        """No attempt is taken any more: the stream ends when the last one has."""
        self._broken: MaestroError | None = None

    async def serve(
        self, requests: AsyncIterator[worker_pb2.DispatchInput]
    ) -> AsyncIterator[worker_pb2.DispatchOutput]:
        """The worker's messages, until the stream ends.

        Raises:
            MaestroError: a message of the scheduler's did not decode (INVALID_ARGUMENT).
        """
        reader = asyncio.create_task(self._read(requests), name="dispatch-reader")
        try:
            while (output := await self._outputs.get()) is not _END:
                yield output
            if self._broken is not None:
                raise self._broken
        finally:
            reader.cancel()
            for task in list(self._attempts.values()):
                task.cancel()

    def drain(self) -> None:
        """Takes no new attempt (each is refused UNAVAILABLE); ends once none is left."""
        self._closing = True
        self._end_if_idle()

    async def _read(self, requests: AsyncIterator[worker_pb2.DispatchInput]) -> None:
        try:
            async for message in requests:
                self._take(message)
        except MaestroError as err:  # undecodable: nothing more on this stream is trusted
            log.warning("a Dispatch stream broke: %s", err.message)
            self._broken = err
            self._outputs.put_nowait(_END)
            return
        except Exception:  # a bug: the stream ends (INTERNAL) rather than hang
            log.exception("reading a Dispatch stream failed")
            self._broken = Internal("internal error in the worker")
            self._outputs.put_nowait(_END)
            return
        self._closing = True  # the scheduler ended its side
        self._end_if_idle()

    def _take(self, message: worker_pb2.DispatchInput) -> None:
        key = message.key
        kind = message.WhichOneof("kind")
        if kind == "cancel":
            task = self._attempts.get(key)
            if task is not None:
                task.cancel()
            return
        if kind != "start":
            self._refuse(key, InvalidArgument("kind", "a message must carry start or cancel"))
        elif key in self._attempts:
            self._refuse(key, InvalidArgument("key", f"attempt {key} is already in flight"))
        elif self._closing:
            self._refuse(key, Unavailable("the worker is draining"))
        else:
            try:
                budget = self._budget(message.start)
            except InvalidArgument as err:
                self._refuse(key, err)
                return
            task = asyncio.create_task(self._run(key, message.start, budget))
            self._attempts[key] = task
            # A callback, not a `finally` in the task: a task cancelled before it first
            # ran never enters its body.
            task.add_done_callback(lambda _: self._ended(key))

    def _budget(self, start: worker_pb2.DispatchStart) -> float:
        """The attempt's seconds: its timeout, within the worker's cap and the stream's
        own deadline.

        Raises:
            InvalidArgument: no positive timeout, or an attempt that needs grants.
        """
        if start.attempt.admit_calls:
            raise InvalidArgument(
                "start.attempt.admit_calls",
                "an attempt that waits for call grants needs ExecuteStep",
            )
        # From the fields, not ToTimedelta: any int64 may come, and must not overflow.
        timeout = start.timeout.seconds + start.timeout.nanos / 1e9
        if not timeout > 0:
            raise InvalidArgument("start.timeout", "must be positive")
        budget = min(timeout, self._max_step_seconds)
        left = self._stream_seconds_left()
        return budget if left is None else min(budget, left)

    async def _run(self, key: int, start: worker_pb2.DispatchStart, budget: float) -> None:
        """One attempt, in its own task (its log and trace context are its own)."""
        request_id_var.set(start.request_id)
        join_trace(start.trace_context)
        try:
            async with asyncio.timeout(budget):
                async for response in self._attempt(start.attempt, budget):
                    self._outputs.put_nowait(worker_pb2.DispatchOutput(key=key, response=response))
        except TimeoutError:
            self._refuse(key, DeadlineExceeded(f"the attempt ran out of its {budget:g}s"))
        except MaestroError as err:
            self._refuse(key, err)
        except Exception:  # a bug: this attempt fails, the stream and the others go on
            log.exception("attempt %d on a Dispatch stream broke", key)
            self._refuse(key, Internal("internal error in the worker"))
        # Cancelled (by the scheduler, or the stream's end): nothing is sent.

    def _ended(self, key: int) -> None:
        del self._attempts[key]
        self._end_if_idle()

    def _refuse(self, key: int, err: MaestroError) -> None:
        error = worker_pb2.DispatchError(code=err.code.value, message=err.message)
        self._outputs.put_nowait(worker_pb2.DispatchOutput(key=key, error=error))

    def _end_if_idle(self) -> None:
        if self._closing and not self._attempts:
            self._outputs.put_nowait(_END)

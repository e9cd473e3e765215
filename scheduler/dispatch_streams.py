"""Attempts to one worker pool over a few long Dispatch streams (worker.proto).

A gRPC call costs both sides far more CPU than a message on an open stream: on the
bench's no-op steps, RunStep's call setup was most of the scheduler's and the worker's
CPU per step. So attempts that wait for no call grants go as keyed messages over a few
streams per pool, each attempt on the stream with the fewest in flight.

Streams are renewed: one takes new attempts for `lifetime` seconds, then is retired
(it half-closes once its last attempt answered) and a new one opens. The pool's
channel balances calls round robin over the pool's addresses, so `count` streams reach
up to `count` worker pods, and renewed streams reach pods that started since. Every
stream has a deadline that covers the attempts it takes (an attempt that would outlive
a stream's deadline goes on a new stream).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Coroutine
from typing import Any

import grpc

from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.core.errors import Code

log = logging.getLogger(__name__)

# grpc.aio's end-of-stream sentinel (missing from the type stubs).
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]

DEADLINE_MARGIN_SECONDS = 30.0
"""A stream's deadline is this much past the end of the longest attempt it may take."""

Call = grpc.aio.StreamStreamCall[worker_pb2.DispatchInput, worker_pb2.DispatchOutput]


class AttemptRefused(Exception):
    """The worker answered an attempt with a status instead of a result or failure."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Ended:
    """Put in an attempt's queue when its stream ended: `error` None is a clean end."""

    def __init__(self, error: grpc.aio.AioRpcError | None) -> None:
        self.error = error


class DispatchAttempt:
    """One attempt on a stream: its answers, in order, and a way to stop waiting."""

    def __init__(self, stream: _Stream, key: int, start: worker_pb2.DispatchStart) -> None:
        self._stream = stream
        self._key = key
        self._start: worker_pb2.DispatchStart | None = start
        self._answers: asyncio.Queue[worker_pb2.DispatchOutput | _Ended] = asyncio.Queue()
        self._done = False

    def deliver(self, answer: worker_pb2.DispatchOutput | _Ended) -> None:
        """Queues what the stream brought for this attempt (its reader calls this)."""
        self._answers.put_nowait(answer)

    async def send(self) -> None:
        """Sends the attempt to the worker (a stream that ended meanwhile answers EOF)."""
        start, self._start = self._start, None
        if start is not None:
            await self._stream.send(worker_pb2.DispatchInput(key=self._key, start=start))

    async def read(self) -> worker_pb2.ExecuteStepResponse | object:
        """The attempt's next answer, or EOF when the stream ended without one.

        Raises:
            AttemptRefused: the worker answered with a status.
            grpc.aio.AioRpcError: the stream failed.
        """
        answer = await self._answers.get()
        if isinstance(answer, _Ended):
            if answer.error is not None:
                raise answer.error
            return EOF
        if answer.WhichOneof("kind") == "error":
            try:
                code = Code(answer.error.code)
            except ValueError:
                code = Code.INTERNAL
            if code is Code.UNAVAILABLE:
                # The worker drains: its stream must not draw the retry (nor others).
                self._stream.retire()
            raise AttemptRefused(code, answer.error.message)
        return answer.response

    def stop(self, *, answered: bool) -> None:
        """Stops waiting; unless `answered`, the worker is told to stop the attempt."""
        if not self._done:
            self._done = True
            self._stream.release(self._key, cancel=not answered)


class _Stream:
    """One Dispatch call and the attempts waiting on it."""

    def __init__(
        self, stub: worker_pb2_grpc.WorkerServiceAsyncStub, *, lifetime: float, longest: float
    ):
        now = time.monotonic()
        # Long enough for the longest attempt it takes (one like the first, or shorter)
        # begun just before it retires.
        seconds = lifetime + longest + DEADLINE_MARGIN_SECONDS
        self.deadline = now + seconds
        self._retire_at = now + lifetime
        self._call: Call = stub.Dispatch(None, timeout=seconds)  # written to below
        self.waiting: dict[int, DispatchAttempt] = {}
        self.retired = False
        self._ended = False
        self._sending = asyncio.Lock()
        self._writes: set[asyncio.Task[None]] = set()
        self.reader = asyncio.create_task(self._read(), name="dispatch-stream-reader")
        # Retired on time even if no attempt comes to notice: an idle stream then ends
        # cleanly (half-closed, the worker answers OK) instead of at its deadline.
        self._retiring = asyncio.get_running_loop().call_later(lifetime, self.retire)

    def live(self, now: float) -> bool:
        """Whether it takes new attempts (retiring it, if its time is up)."""
        if not self.retired and (self._ended or now >= self._retire_at):
            self.retire()
        return not self.retired

    def fits(self, timeout: float, now: float) -> bool:
        return now + timeout + DEADLINE_MARGIN_SECONDS <= self.deadline

    def add(self, key: int, start: worker_pb2.DispatchStart) -> DispatchAttempt:
        attempt = DispatchAttempt(self, key, start)
        self.waiting[key] = attempt
        if self._ended:
            attempt.deliver(_Ended(None))
        return attempt

    def release(self, key: int, *, cancel: bool) -> None:
        self.waiting.pop(key, None)
        if cancel and not self._ended:
            self._later(self.send(worker_pb2.DispatchInput(key=key, cancel=True)))
        if self.retired and not self.waiting:
            self._later(self._half_close())

    def retire(self) -> None:
        """Takes no new attempt; half-closes once none is waiting."""
        if self.retired:
            return
        self.retired = True
        self._retiring.cancel()
        if not self.waiting:
            self._later(self._half_close())

    def close(self) -> None:
        """Ends the call now (the scheduler stops): waiting attempts see it end."""
        self.retired = True
        self._retiring.cancel()
        self._call.cancel()

    def _later(self, write: Coroutine[Any, Any, None]) -> None:
        # A write asked for by a step task that may be being cancelled: in a task of
        # its own, kept until done.
        task = asyncio.create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def send(self, message: worker_pb2.DispatchInput) -> None:
        try:
            async with self._sending:
                await self._call.write(message)
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError) as err:
            # The call ended: the reader tells every waiting attempt how.
            log.debug("a message on an ended Dispatch stream was dropped: %s", err)

    async def _half_close(self) -> None:
        if self._ended:
            return
        try:
            async with self._sending:
                await self._call.done_writing()
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError) as err:
            log.debug("a Dispatch stream ended before it was half-closed: %s", err)

    async def _read(self) -> None:
        error: grpc.aio.AioRpcError | None = None
        try:
            while (message := await self._call.read()) is not EOF:
                assert isinstance(message, worker_pb2.DispatchOutput)
                attempt = self.waiting.get(message.key)
                if attempt is not None:  # else stopped waiting: dropped
                    attempt.deliver(message)
        except grpc.aio.AioRpcError as err:
            error = err
        finally:
            self._ended = True
            self.retired = True
            self._retiring.cancel()
            for attempt in self.waiting.values():
                attempt.deliver(_Ended(error))


class DispatchStreams:
    """The Dispatch streams to one worker pool."""

    def __init__(
        self, stub: worker_pb2_grpc.WorkerServiceAsyncStub, *, count: int, lifetime: float
    ) -> None:
        self._stub = stub
        self._count = count
        self._lifetime = lifetime
        self._streams: list[_Stream] = []
        """The streams that take new attempts."""
        self._open: set[_Stream] = set()
        """Every stream not yet ended, retired ones too (until their attempts end)."""
        self._keys = itertools.count(1)

    def add(self, start: worker_pb2.DispatchStart, timeout: float) -> DispatchAttempt:
        """Places an attempt, which may take `timeout` seconds, on a stream (`send`
        sends it)."""
        return self._stream_for(timeout).add(next(self._keys), start)

    def _stream_for(self, timeout: float) -> _Stream:
        now = time.monotonic()
        # Retired streams stay alive (their readers hold them) until their attempts end.
        self._streams = [stream for stream in self._streams if stream.live(now)]
        fitting = [stream for stream in self._streams if stream.fits(timeout, now)]
        if len(self._streams) < self._count or not fitting:
            stream = _Stream(self._stub, lifetime=self._lifetime, longest=timeout)
            self._streams.append(stream)
            self._open.add(stream)
            stream.reader.add_done_callback(lambda _: self._open.discard(stream))
            return stream
        return min(fitting, key=lambda stream: len(stream.waiting))

    def close(self) -> None:
        for stream in list(self._open):
            stream.close()
        self._streams = []

"""The scheduler's side of an ExecuteStep call writes one message at a time."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from maestro.api.worker.v1 import worker_pb2
from scheduler.worker_client import StreamCall, _send


class _OneWriteAtATime:
    """A call that, like gRPC's, must not be written to while a write is in flight."""

    def __init__(self) -> None:
        self.writing = False
        self.written: list[Any] = []

    async def write(self, message: Any) -> None:
        assert not self.writing, "a second write while one was in flight"
        self.writing = True
        await asyncio.sleep(0)  # in flight: the event loop runs others meanwhile
        self.writing = False
        self.written.append(message)


async def test_grants_written_at_once_go_one_after_another() -> None:
    call = _OneWriteAtATime()
    sending = asyncio.Lock()
    grants = [
        worker_pb2.ExecuteStepInput(grant=worker_pb2.CallGrant(call=number))
        for number in range(2, 7)
    ]
    await asyncio.gather(*(_send(cast(StreamCall, call), sending, g) for g in grants))
    assert sorted(m.grant.call for m in call.written) == [2, 3, 4, 5, 6]

"""Each model call of an attempt after the first waits for the scheduler's grant.

The scheduler admits a step's first call before it dispatches the step, within the
model's rate limits for the whole installation. An agent loop makes more calls; each
one asks first (a CallAsk, sent up the ExecuteStep stream as a `call_request`) and
goes only once the scheduler grants it (a `grant` down the same stream). A refusal,
or the attempt's time running out while it waits, fails the attempt as retryable.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from persona_service.models import FailureKind, StepFailed, TokenUsage
from persona_service.rate_limits import RateLimits

log = logging.getLogger(__name__)

CAPACITY_WAIT = "capacity_wait"


@dataclass(frozen=True)
class CallAsk:
    """The worker asks to make call number `call` (see worker.proto's CallRequest)."""

    call: int
    input_tokens: int
    usage: TokenUsage
    rate_limits: RateLimits | None


class CallAdmission:
    """The worker's side of per-call admission, for one attempt."""

    def __init__(self) -> None:
        self._asks: asyncio.Queue[CallAsk] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[str]] = {}
        self._ended = ""

    async def next_ask(self) -> CallAsk:
        """The next ask to send to the scheduler."""
        return await self._asks.get()

    async def before_call(self, ask: CallAsk, *, timeout: float) -> None:
        """Waits for the grant of `ask` (the first call needs none).

        Raises:
            StepFailed: RETRYABLE `capacity_wait`: refused, the stream's other side is
                gone, or `timeout` seconds passed first.
        """
        if ask.call <= 1:
            return
        if self._ended:
            raise StepFailed(FailureKind.RETRYABLE, CAPACITY_WAIT, self._ended)
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[ask.call] = answer
        self._asks.put_nowait(ask)
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                refused = await answer
        except TimeoutError:
            raise StepFailed(
                FailureKind.RETRYABLE,
                CAPACITY_WAIT,
                f"the step's time ran out while call {ask.call} waited for model capacity",
            ) from None
        finally:
            self._pending.pop(ask.call, None)
        if refused:
            raise StepFailed(FailureKind.RETRYABLE, CAPACITY_WAIT, refused)

    def granted(self, call: int, refused: str) -> None:
        """The scheduler answered the ask of `call` (refused: why not; "" grants it)."""
        answer = self._pending.get(call)
        if answer is None or answer.done():
            log.warning("a grant for call %d, which is not waiting; ignored", call)
            return
        answer.set_result(refused)

    def end(self, why: str) -> None:
        """No grant can come any more (the scheduler's side of the stream ended)."""
        self._ended = why
        for answer in self._pending.values():
            if not answer.done():
                answer.set_result(why)

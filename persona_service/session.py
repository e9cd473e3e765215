"""One attempt's dealings with the model: limits checked before every call, every call
counted and written to the transcript."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anthropic.types import ContentBlock, Message, TextBlockParam, ToolParam

from maestro.personas import Persona
from persona_service.call_admission import CallAdmission, CallAsk
from persona_service.claude import Claude
from persona_service.models import FailureKind, ProgressCallback, StepFailed, StepRequest
from persona_service.transcript import Transcript
from persona_service.usage import UsageMeter

# A call needs at least this much of the attempt's time to be worth starting.
MIN_CALL_SECONDS = 1.0


def block_param(block: ContentBlock) -> dict[str, Any]:
    """An answer's content block as it goes back to the API (thinking blocks unchanged)."""
    if block.type == "text":
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if block.type == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if block.type == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.data}
    return block.model_dump(mode="json", exclude_none=True)


def answer_text(message: Message) -> str:
    """The text blocks of an answer, joined."""
    return "".join(block.text for block in message.content if block.type == "text")


@dataclass
class Session:
    """What every call of one attempt shares."""

    claude: Claude
    request: StepRequest
    persona: Persona
    model: str
    effort: str
    max_tokens: int
    meter: UsageMeter
    progress: ProgressCallback
    transcript: Transcript
    deadline: float
    """The attempt's end, in event-loop time."""
    admission: CallAdmission | None = None
    """Asks the scheduler before each call after the first; None: calls go at once."""
    _sent_messages: int = 0
    """How many messages of the conversation the previous call sent."""

    def remaining(self) -> float:
        """Seconds left of the attempt."""
        return self.deadline - asyncio.get_running_loop().time()

    def before_call(self, when: str) -> float:
        """Checks the budget and the time before a call; returns the seconds left.

        Raises:
            StepFailed: BUDGET_EXCEEDED, or RETRYABLE "attempt_timeout".
        """
        self.meter.check_budget(when)
        left = self.remaining()
        if left < MIN_CALL_SECONDS:
            raise StepFailed(
                FailureKind.RETRYABLE,
                "attempt_timeout",
                f"the step's time ran out {when} ({max(left, 0):.1f}s left)",
            )
        return left

    async def call(
        self,
        *,
        turn: int,
        when: str,
        system: Sequence[TextBlockParam],
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[ToolParam] = (),
        output_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> Message:
        """Makes one call within the attempt's limits (and, for the calls after the
        first, once the scheduler admits it) and records it."""
        left = self.before_call(when)
        if self.admission is not None:
            await self._admitted(messages, left)
            left = self.before_call(when)  # the wait took some of the time
        before = self.meter.total
        try:
            message = await self.claude.call(
                model=self.model,
                effort=self.effort,
                system=system,
                messages=messages,
                max_tokens=max_tokens or self.max_tokens,
                meter=self.meter,
                progress=self.progress,
                timeout=left,
                tools=tools,
                output_schema=output_schema,
            )
        except StepFailed as failure:
            spent = self.meter.total
            self.transcript.add(
                "call_failed",
                turn=turn,
                reason=failure.reason,
                input_tokens=spent.input_tokens - before.input_tokens,
            )
            raise
        spent = self.meter.total
        self.transcript.add(
            "call",
            turn=turn,
            model=message.model,
            stop_reason=message.stop_reason,
            input_tokens=spent.input_tokens - before.input_tokens,
            output_tokens=spent.output_tokens - before.output_tokens,
            cache_read_input_tokens=spent.cache_read_input_tokens - before.cache_read_input_tokens,
            cache_creation_input_tokens=spent.cache_creation_input_tokens
            - before.cache_creation_input_tokens,
            cost_usd=round(spent.cost_usd - before.cost_usd, 6),
        )
        text = answer_text(message)
        if text:
            self.transcript.add("text", turn=turn, text=text)
        return message

    async def _admitted(self, messages: Sequence[Mapping[str, Any]], left: float) -> None:
        assert self.admission is not None
        # What the call adds to the conversation is what the limit counts: the rest
        # is read from the prompt cache (a breakpoint on every turn). Only the new
        # messages are measured, so a long loop does not serialize its past each turn.
        since = self._sent_messages if self._sent_messages <= len(messages) else 0
        added = len(json.dumps(list(messages[since:]), default=str))
        self._sent_messages = len(messages)
        total = self.meter.total
        ask = CallAsk(
            call=total.calls + 1,
            input_tokens=added // 4,
            usage=total,
            rate_limits=self.meter.report(),
        )
        await self.admission.before_call(ask, timeout=left - MIN_CALL_SECONDS)

    def stopped(self, message: Message) -> None:
        """Fails the attempt for stop reasons no continuation can fix.

        Raises:
            StepFailed: FATAL for a refusal or a full context window.
        """
        if message.stop_reason == "refusal":
            raise StepFailed(
                FailureKind.FATAL,
                "refusal",
                f"{self.model} refused to do the step (stop_reason refusal)",
            )
        if message.stop_reason == "model_context_window_exceeded":
            raise StepFailed(
                FailureKind.FATAL,
                "context_window",
                f"the conversation outgrew {self.model}'s context window",
            )

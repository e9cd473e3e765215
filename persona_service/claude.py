"""One streamed Messages API call, made by current models' rules and fully accounted.

Requests carry no forced tool choice, no sampling parameters, no assistant prefill and
no thinking budget: current models (Claude Sonnet 5.5, Opus 5.5, Fable 5.1) answer
those with HTTP 400. Known models that think adaptively get `thinking: {type:
adaptive}`; an effort level goes in `output_config.effort` for models that take it (or
for a model the worker does not know, when one was asked for: its name and settings
pass through as given, and the API decides). Structured output is requested with
`output_config.format`.

Every call is streamed: a stream that sends no byte for the idle timeout ends the call
(retryable), long before the step's deadline; progress notes report how much has been
written. Usage is counted into the attempt's meter even when the call fails, from what
the stream reported before it broke off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import anthropic
from anthropic.types import Message, MessageParam, TextBlockParam, ToolParam

from maestro.core.tracing import span
from persona_service.api_errors import classify
from persona_service.catalog import is_known, supports_adaptive_thinking, supports_effort
from persona_service.models import FailureKind, ProgressCallback, StepFailed
from persona_service.rate_limits import from_headers
from persona_service.usage import UsageMeter

log = logging.getLogger(__name__)

# Only a fallback for calls that forget to pass one; every call here passes its own,
# so the SDK's 10-minute default is never in force.
_CLIENT_DEFAULT_TIMEOUT = 60.0


class Claude:
    """The Anthropic API through the official async SDK.

    Args:
        api_key: The Anthropic API key.
        base_url: Another API endpoint (a proxy, or the fake in tests); None for the
            SDK's default.
        idle_timeout: Seconds a stream may send nothing before the call is given up.
        overload_retry_after: The retry hint for overload when the API gives none.
        progress_every: Seconds between "writing" notes while an answer streams in.
        quiet_note_every: While the stream sends nothing, a note says so this often
            ("no output from MODEL for 60s"), so a watcher can tell a quiet model from
            a stuck worker.
        max_retries: Retries inside the SDK. 0: the scheduler owns retries, with
            backoff and a view of the whole run.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        idle_timeout: float = 90.0,
        overload_retry_after: float = 30.0,
        progress_every: float = 5.0,
        quiet_note_every: float = 60.0,
        max_retries: int = 0,
    ) -> None:
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=_CLIENT_DEFAULT_TIMEOUT,
        )
        self.idle_timeout = idle_timeout
        self.overload_retry_after = overload_retry_after
        self.progress_every = progress_every
        self.quiet_note_every = quiet_note_every

    @property
    def url(self) -> str:
        """The API's base URL, as named in error messages."""
        return str(self._client.base_url).rstrip("/")

    async def aclose(self) -> None:
        """Closes the SDK's HTTP connections."""
        await self._client.close()

    @staticmethod
    def options(model: str, effort: str) -> dict[str, Any]:
        """The thinking and effort settings a call to `model` carries.

        Args:
            model: The model to call.
            effort: The effort asked for; "" for the model's default.
        """
        options: dict[str, Any] = {}
        if supports_adaptive_thinking(model):
            options["thinking"] = {"type": "adaptive"}
        if effort and (supports_effort(model) or not is_known(model)):
            options["output_config"] = {"effort": effort}
        return options

    async def call(
        self,
        *,
        model: str,
        effort: str,
        system: Sequence[TextBlockParam],
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        meter: UsageMeter,
        progress: ProgressCallback,
        timeout: float,
        tools: Sequence[ToolParam] = (),
        output_schema: dict[str, Any] | None = None,
    ) -> Message:
        """Makes one streamed call and returns the whole answer (in its own span).

        Args:
            model: The model to call.
            effort: The effort level; "" for the model's default.
            system: The system prompt's blocks.
            messages: The conversation so far; it ends with a user turn.
            max_tokens: The answer's output budget.
            meter: Counts the call and its tokens.
            progress: Receives "writing" notes while the answer streams in.
            timeout: Seconds this call may take at most (what is left of the step).
            tools: Tool definitions; the model chooses whether to call them.
            output_schema: A JSON schema the answer's text must follow.

        Raises:
            StepFailed: the call failed (the kind says whether another attempt may help).
        """
        with span(
            "anthropic.messages", {"gen_ai.system": "anthropic", "gen_ai.request.model": model}
        ) as current:
            message = await self._stream_call(
                model=model,
                effort=effort,
                system=system,
                messages=messages,
                max_tokens=max_tokens,
                meter=meter,
                progress=progress,
                timeout=timeout,
                tools=tools,
                output_schema=output_schema,
            )
            current.set_attributes(
                {
                    "gen_ai.response.model": message.model or model,
                    "gen_ai.usage.input_tokens": message.usage.input_tokens,
                    "gen_ai.usage.output_tokens": message.usage.output_tokens,
                }
            )
            return message

    async def _stream_call(
        self,
        *,
        model: str,
        effort: str,
        system: Sequence[TextBlockParam],
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        meter: UsageMeter,
        progress: ProgressCallback,
        timeout: float,
        tools: Sequence[ToolParam],
        output_schema: dict[str, Any] | None,
    ) -> Message:
        kwargs = self.options(model, effort)
        if output_schema is not None:
            config = dict(kwargs.get("output_config", {}))
            config["format"] = {"type": "json_schema", "schema": output_schema}
            kwargs["output_config"] = config
        if tools:
            kwargs["tools"] = list(tools)
        meter.start_call()
        reported: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        activity = [loop.time()]  # when the stream last sent something
        quiet = asyncio.create_task(self._quiet_notes(model, activity, progress))
        try:
            # The SDK's timeout bounds each network phase (a read: the idle timeout);
            # asyncio.timeout bounds the whole call.
            async with (
                asyncio.timeout(timeout),
                self._client.messages.stream(
                    model=model,
                    max_tokens=max_tokens,
                    system=list(system),
                    messages=cast("list[MessageParam]", list(messages)),
                    timeout=min(self.idle_timeout, max(timeout, 0.001)),
                    **kwargs,
                ) as stream,
            ):
                meter.answer_began()
                meter.rate_limits = from_headers(stream.response.headers, model) or (
                    meter.rate_limits
                )
                await self._consume(stream, model, reported, progress, activity)
                message = await stream.get_final_message()
        except TimeoutError:
            self._record(meter, model, reported)
            raise StepFailed(
                FailureKind.RETRYABLE,
                "attempt_timeout",
                f"the step's time ran out ({timeout:.0f}s left) while {model} at {self.url} "
                "was answering",
            ) from None
        except Exception as err:
            self._record(meter, model, reported)
            if isinstance(err, anthropic.APIStatusError):
                meter.answer_began()
                meter.rate_limits = from_headers(err.response.headers, model) or meter.rate_limits
            failure = classify(
                err,
                url=self.url,
                model=model,
                idle_timeout=self.idle_timeout,
                overload_retry_after=self.overload_retry_after,
            )
            if failure is None:
                raise
            failure.model = model
            raise failure from err
        finally:
            quiet.cancel()
        usage = message.usage
        creation = usage.cache_creation
        written = usage.cache_creation_input_tokens or 0
        meter.record(
            message.model or model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read=usage.cache_read_input_tokens or 0,
            cache_write_5m=creation.ephemeral_5m_input_tokens if creation else written,
            cache_write_1h=creation.ephemeral_1h_input_tokens if creation else 0,
        )
        log.debug("answer from %s: %s", model, message.model_dump_json())
        return message

    async def _consume(
        self,
        stream: Any,
        model: str,
        reported: dict[str, int],
        progress: ProgressCallback,
        activity: list[float],
    ) -> None:
        """Reads the stream to its end, keeping the usage it reports as it goes."""
        loop = asyncio.get_running_loop()
        written = 0
        last_note = loop.time()
        async for event in stream:
            activity[0] = loop.time()
            if event.type == "message_start":
                usage = event.message.usage
                reported["input"] = usage.input_tokens
                reported["read"] = usage.cache_read_input_tokens or 0
                reported["write"] = usage.cache_creation_input_tokens or 0
                reported["output"] = usage.output_tokens
            elif event.type == "message_delta":
                reported["output"] = event.usage.output_tokens
            elif event.type == "content_block_delta":
                delta = event.delta
                if delta.type == "input_json_delta":
                    written += len(delta.partial_json)
                elif delta.type == "text_delta":
                    written += len(delta.text)
            if loop.time() - last_note >= self.progress_every:
                last_note = loop.time()
                progress(f"{model} writing: {written / 1024:.1f} KiB so far")

    async def _quiet_notes(
        self, model: str, activity: list[float], progress: ProgressCallback
    ) -> None:
        """Says so every `quiet_note_every` seconds while the stream sends nothing."""
        loop = asyncio.get_running_loop()
        while True:
            wait = activity[0] + self.quiet_note_every - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            silent = loop.time() - activity[0]
            shown = f"{silent:.1f}" if silent < 10 else f"{silent:.0f}"
            progress(
                f"no output from {model} for {shown}s (the call is given up after "
                f"{self.idle_timeout:g}s without output)"
            )
            await asyncio.sleep(self.quiet_note_every)

    @staticmethod
    def _record(meter: UsageMeter, model: str, reported: dict[str, int]) -> None:
        """Counts what a broken-off stream had reported (billed input, mostly)."""
        if reported:
            meter.record(
                model,
                input_tokens=reported.get("input", 0),
                output_tokens=reported.get("output", 0),
                cache_read=reported.get("read", 0),
                cache_write_5m=reported.get("write", 0),
            )

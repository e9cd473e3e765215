"""The Anthropic provider: one Messages API call per step attempt, answered by a tool.

The persona answers through a single forced tool, `submit_step_result`, whose input
schema is generated from a pydantic model, so its output is validated structure rather
than prose to be parsed. Every SDK failure becomes one of the worker's errors; their
messages carry the HTTP status and the API's error type and message, never the prompt
or the model's output (those are logged at DEBUG only).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import anthropic
from anthropic.lib.streaming import AsyncMessageStream
from anthropic.types import Message, MessageParam, ToolChoiceToolParam, ToolParam, ToolUseBlock
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maestro.core.errors import MaestroError
from maestro.paths import BadPath, check_file_size, normalize_artifact_path
from maestro.personas import Persona
from persona_service.models import (
    ProgressCallback,
    ProviderBadOutput,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    StepOutput,
    StepRequest,
    TextFile,
    TokenUsage,
)
from persona_service.prompts import SUBMIT_TOOL_NAME, build_user_message

log = logging.getLogger(__name__)

# Only a fallback for calls that forget to pass one; every call in this module passes
# the attempt's own timeout, so the SDK's 10-minute default is never in force.
_CLIENT_DEFAULT_TIMEOUT = 60.0
_MAX_API_MESSAGE = 300


class SubmittedFile(BaseModel):
    """One file in the tool input."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="Relative path with '/' separators, e.g. 'app/main.py'.")
    content: str = Field(description="The complete text of the file.")


class StepResult(BaseModel):
    """The input of the submit_step_result tool: the whole result of a step."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    summary: str = Field(
        min_length=1, description="A few sentences on what was produced and decided."
    )
    files: list[SubmittedFile] = Field(
        min_length=1, description="Every file this step writes, with its complete content."
    )


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """Replaces local `$ref`s by their definitions, so the schema is self-contained."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node


def step_result_schema() -> dict[str, Any]:
    """Returns the JSON schema of the tool input, generated from StepResult."""
    schema = StepResult.model_json_schema()
    inlined: dict[str, Any] = _inline_refs(schema, schema.get("$defs", {}))
    return inlined


def submit_tool() -> ToolParam:
    """Returns the definition of the one tool a persona answers through."""
    return {
        "name": SUBMIT_TOOL_NAME,
        "description": (
            "Submit the result of this step: a short summary and every file written, "
            "each with a relative path and its complete content. Call it exactly once."
        ),
        "input_schema": step_result_schema(),
    }


class AnthropicProvider:
    """Runs steps with Claude through the official async SDK.

    Args:
        api_key: The Anthropic API key.
        model: The model name sent with every call.
        base_url: Another API endpoint (a proxy, or the fake in tests); None for the
            SDK's default.
        max_tokens: The output budget of one call.
        max_retries: Retries inside the SDK. 0 by default because the scheduler owns
            retries, with backoff and a view of the whole run; retrying here as well
            would multiply attempts and hide failures from it.
        progress_every: Seconds between progress notes while the answer streams in.
    """

    name: str = "anthropic"

    def __init__(
        self,
        api_key: str,
        model: str,
        *,
        base_url: str | None = None,
        max_tokens: int = 16000,
        max_retries: int = 0,
        progress_every: float = 5.0,
    ) -> None:
        self._model = model
        self._progress_every = progress_every
        self._max_tokens = max_tokens
        self._tool = submit_tool()
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=_CLIENT_DEFAULT_TIMEOUT,
        )

    @property
    def model(self) -> str:
        """The model name sent with every call."""
        return self._model

    async def _report_while_streaming(
        self, stream: AsyncMessageStream[Any], progress: ProgressCallback
    ) -> None:
        """Consumes the stream, noting how much has been written every so often."""
        loop = asyncio.get_running_loop()
        written = 0
        last_note = loop.time()
        async for event in stream:
            if event.type == "content_block_delta":
                delta = event.delta
                if delta.type == "input_json_delta":
                    written += len(delta.partial_json)
                elif delta.type == "text_delta":
                    written += len(delta.text)
            if loop.time() - last_note >= self._progress_every:
                last_note = loop.time()
                progress(f"{self._model} writing: {written / 1024:.1f} KiB so far")

    async def aclose(self) -> None:
        """Closes the SDK's HTTP connections; call once when the worker shuts down."""
        await self._client.close()

    async def run(
        self,
        request: StepRequest,
        persona: Persona,
        *,
        timeout: float,  # noqa: ASYNC109 - the Provider protocol's explicit budget
        progress: ProgressCallback,
    ) -> StepOutput:
        """Runs one step attempt with one Messages API call.

        Args:
            request: The step attempt.
            persona: The persona whose system prompt and deliverables apply.
            timeout: Seconds the whole call may take.
            progress: Receives short notes for the scheduler's event stream.

        Returns:
            The validated files, summary and token usage.

        Raises:
            ProviderRateLimited, ProviderTimeout, ProviderUnavailable, ProviderRejected:
                the API call failed (the message says how).
            ProviderBadOutput: the answer was cut off, had no tool call, or had invalid
                input, paths or file sizes.
        """
        user_message = build_user_message(request, persona)
        log.debug("step %s prompt for %s:\n%s", request.step_id, persona.name, user_message)
        messages: list[MessageParam] = [{"role": "user", "content": user_message}]
        tool_choice: ToolChoiceToolParam = {"type": "tool", "name": SUBMIT_TOOL_NAME}

        progress(f"calling {self._model}")
        try:
            # The SDK's timeout bounds each network phase; asyncio.timeout bounds the
            # whole call, so the attempt never outlives the time it was given.
            async with (
                asyncio.timeout(timeout),
                self._client.messages.stream(
                    model=self._model,
                    max_tokens=self._max_tokens,
                    system=persona.system_prompt,
                    messages=messages,
                    tools=[self._tool],
                    tool_choice=tool_choice,
                    timeout=timeout,
                ) as stream,
            ):
                # Streamed, so a model that writes for minutes still shows progress.
                await self._report_while_streaming(stream, progress)
                response = await stream.get_final_message()
        except TimeoutError:
            raise ProviderTimeout(f"{self._model} did not answer within {timeout:g}s") from None
        except anthropic.AnthropicError as err:
            raise provider_error(err, model=self._model, timeout=timeout) from err

        progress(f"{response.model} answered: {response.usage.output_tokens} output tokens")
        log.debug("step %s raw answer: %s", request.step_id, response.model_dump_json())
        result = parse_response(response, max_tokens=self._max_tokens)
        return StepOutput(
            summary=result.summary,
            files=checked_files(result),
            usage=TokenUsage(
                input_tokens=response.usage.input_tokens,
                output_tokens=response.usage.output_tokens,
            ),
            provider=self.name,
            model=response.model,
        )


def parse_response(response: Message, *, max_tokens: int) -> StepResult:
    """Extracts and validates the submit_step_result input of an answer.

    Raises:
        ProviderBadOutput: the answer was cut off, refused, had no tool call, or its
            tool input does not match the schema.
    """
    stop = response.stop_reason
    if stop == "max_tokens":
        raise ProviderBadOutput(
            f"the answer hit max_tokens ({max_tokens}) before the tool input was complete; "
            "raise max_tokens or split the step"
        )
    if stop == "model_context_window_exceeded":
        raise ProviderBadOutput("the answer stopped at the model's context window limit")
    if stop == "refusal":
        raise ProviderBadOutput("the model refused to answer (stop_reason=refusal)")

    block = next(
        (b for b in response.content if isinstance(b, ToolUseBlock) and b.name == SUBMIT_TOOL_NAME),
        None,
    )
    if block is None:
        kinds = ", ".join(b.type for b in response.content) or "nothing"
        raise ProviderBadOutput(
            f"the answer has no {SUBMIT_TOOL_NAME} tool call (stop_reason={stop}, content: {kinds})"
        )
    try:
        return StepResult.model_validate(block.input)
    except ValidationError as err:
        # Locations and reasons only: the offending values are model output.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}"
            for e in err.errors(include_url=False, include_input=False)
        )
        raise ProviderBadOutput(f"the {SUBMIT_TOOL_NAME} input is invalid: {problems}") from None


def checked_files(result: StepResult) -> tuple[TextFile, ...]:
    """Normalises and size-checks every file of a result.

    Raises:
        ProviderBadOutput: a path is unusable, a file too large, or a path repeated.
    """
    files: list[TextFile] = []
    seen: set[str] = set()
    for submitted in result.files:
        try:
            path = normalize_artifact_path(submitted.path)
            check_file_size(path, len(submitted.content.encode("utf-8")))
        except BadPath as err:
            raise ProviderBadOutput(f"bad file in the answer: {err}") from None
        if path in seen:
            raise ProviderBadOutput(f"bad file in the answer: path {path!r} appears twice")
        seen.add(path)
        files.append(TextFile(path=path, content=submitted.content))
    return tuple(files)


def _status_detail(err: anthropic.APIStatusError) -> str:
    api_message = (err.api_message or "").strip()
    if len(api_message) > _MAX_API_MESSAGE:
        api_message = api_message[:_MAX_API_MESSAGE] + "..."
    detail = f"HTTP {err.status_code} {err.type or 'error'}"
    if api_message:
        detail += f": {api_message}"
    if err.request_id:
        detail += f" (request-id {err.request_id})"
    return detail


def _retry_after(err: anthropic.APIStatusError) -> float | None:
    headers = err.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            seconds = float(raw) * scale
        except ValueError:
            # An HTTP date, or garbage: not worth parsing; the scheduler backs off anyway.
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def provider_error(err: anthropic.AnthropicError, *, model: str, timeout: float) -> MaestroError:
    """Maps an SDK exception to the worker's error family.

    Args:
        err: What the SDK raised.
        model: The model called, for the message.
        timeout: The call's timeout, for the message.

    Returns:
        ProviderRateLimited for 429; ProviderTimeout for client timeouts and 408;
        ProviderUnavailable for connection failures and 5xx (529 overloaded included);
        ProviderRejected for other 4xx and for client-side configuration errors.
    """
    if isinstance(err, anthropic.APITimeoutError):
        return ProviderTimeout(f"{model} did not answer within {timeout:g}s")
    if isinstance(err, anthropic.APIConnectionError):
        cause = type(err.__cause__).__name__ if err.__cause__ else "unknown cause"
        return ProviderUnavailable(f"cannot reach the Anthropic API ({cause}): {err.message}")
    if isinstance(err, anthropic.APIStatusError):
        detail = _status_detail(err)
        status = err.status_code
        if status == 429:
            retry_after = _retry_after(err)
            hint = f"; retry after {retry_after:g}s" if retry_after is not None else ""
            return ProviderRateLimited(
                f"rate limited by the Anthropic API: {detail}{hint}", retry_after=retry_after
            )
        if status == 408:
            # The API's own request timeout: like ours, worth another attempt.
            return ProviderTimeout(f"the Anthropic API timed the request out: {detail}")
        if status >= 500:
            return ProviderUnavailable(
                f"the Anthropic API failed: {detail}", retry_after=_retry_after(err)
            )
        return ProviderRejected(f"the Anthropic API rejected the request: {detail}")
    if isinstance(err, anthropic.APIResponseValidationError):
        return ProviderBadOutput(
            f"the Anthropic API answered HTTP {err.status_code} with a body the SDK "
            "could not validate"
        )
    if isinstance(err, anthropic.APIError):
        return ProviderUnavailable(f"the Anthropic API call failed: {type(err).__name__}")
    # Not an API call at all (credentials, configuration): retrying cannot help.
    return ProviderRejected(f"the Anthropic client failed: {type(err).__name__}: {err}")

"""Classifies what went wrong with a call to the Anthropic API, where it happened.

Every failure becomes a StepFailed whose kind tells the scheduler what to do and whose
message names the party that failed: "the Anthropic API at URL answered 529
overloaded_error: Overloaded (request-id ...)", never "worker unavailable". Messages
carry the HTTP status, the API's error type and message and the request id, never the
prompt or the model's output (those are logged at DEBUG only).
"""

from __future__ import annotations

import anthropic
import httpx2

from persona_service.models import FailureKind, StepFailed
from persona_service.rate_limits import retry_after_seconds

_MAX_API_MESSAGE = 300
# 429 that retrying cannot fix: the organisation's monthly spend limit.
_SPEND_LIMIT_CODES = frozenset({"enforced_spend_limit_reached"})


def _retry_after(err: anthropic.APIStatusError) -> float | None:
    return retry_after_seconds(err.response.headers)


def _detail(err: anthropic.APIStatusError) -> str:
    api_message = (err.api_message or "").strip()
    if len(api_message) > _MAX_API_MESSAGE:
        api_message = api_message[:_MAX_API_MESSAGE] + "..."
    detail: str = err.type or "error"
    if api_message:
        detail += f": {api_message}"
    if err.request_id:
        detail += f" (request-id {err.request_id})"
    return detail


def classify(
    err: BaseException,
    *,
    url: str,
    model: str,
    idle_timeout: float,
    overload_retry_after: float,
) -> StepFailed | None:
    """Turns an SDK or transport exception into a StepFailed; None if it is neither.

    Args:
        err: What the SDK (or its HTTP client, for a stream that stalls) raised.
        url: The API's base URL, named in every message.
        model: The model called.
        idle_timeout: Seconds without a byte after which a stream counts as stalled.
        overload_retry_after: The backoff hint for overload when the API gives none.
    """
    if isinstance(err, anthropic.APIStatusError):
        return _status_failure(err, url=url, overload_retry_after=overload_retry_after)
    if isinstance(err, anthropic.APITimeoutError | httpx2.TimeoutException):
        cause = err.__cause__ if isinstance(err, anthropic.APITimeoutError) else err
        if isinstance(cause, httpx2.ConnectTimeout):
            return StepFailed(
                FailureKind.RETRYABLE,
                "connect_timeout",
                f"cannot reach the Anthropic API at {url}: no connection within {idle_timeout:g}s",
            )
        return StepFailed(
            FailureKind.RETRYABLE,
            "idle_timeout",
            f"the Anthropic API at {url} sent nothing for {idle_timeout:g}s while {model} "
            "was answering (MAESTRO_WORKER_IDLE_TIMEOUT_SECONDS)",
        )
    if isinstance(err, anthropic.APIConnectionError | httpx2.TransportError):
        cause = err.__cause__ if isinstance(err, anthropic.APIConnectionError) else err
        name = type(cause).__name__ if cause is not None else type(err).__name__
        return StepFailed(
            FailureKind.RETRYABLE,
            "connection_error",
            f"cannot reach the Anthropic API at {url} ({name})",
        )
    if isinstance(err, anthropic.APIResponseValidationError):
        return StepFailed(
            FailureKind.RETRYABLE,
            "bad_response",
            f"the Anthropic API at {url} answered HTTP {err.status_code} with a body the SDK "
            "could not read",
        )
    if isinstance(err, anthropic.APIError):
        return StepFailed(
            FailureKind.RETRYABLE,
            "api_error",
            f"the call to the Anthropic API at {url} failed: {type(err).__name__}",
        )
    if isinstance(err, anthropic.AnthropicError):
        # Not an API call at all (credentials, configuration): retrying cannot help.
        return StepFailed(
            FailureKind.FATAL,
            "client_error",
            f"the Anthropic client failed: {type(err).__name__}: {err}",
        )
    return None


def _status_failure(
    err: anthropic.APIStatusError, *, url: str, overload_retry_after: float
) -> StepFailed:
    status = err.status_code
    detail = _detail(err)
    asked = _retry_after(err)
    if err.type == "overloaded_error" or status == 529:
        # Inside a 200 stream the API reports overload as an error event.
        in_stream = status < 400
        where = "reported overloaded_error inside its stream" if in_stream else f"answered {status}"
        wait = max(asked or 0.0, overload_retry_after)
        return StepFailed(
            FailureKind.OVERLOADED,
            "overloaded_error" if in_stream else "http_529",
            f"the Anthropic API at {url} {where} ({detail})",
            retry_after=wait or None,
        )
    if status == 429:
        if err.error_code in _SPEND_LIMIT_CODES:
            return StepFailed(
                FailureKind.FATAL,
                "spend_limit",
                f"the Anthropic API at {url} answered 429: the organisation's spend limit is "
                f"reached ({detail})",
            )
        hint = f"; retry after {asked:g}s" if asked is not None else ""
        return StepFailed(
            FailureKind.RATE_LIMITED,
            "http_429",
            f"the Anthropic API at {url} answered 429 rate limited ({detail}){hint}",
            retry_after=asked,
        )
    if status < 400 or status in (408, 409) or status >= 500:
        # An error event inside a 200 stream, the API's own timeout, or a server error.
        reason = f"http_{status}" if status >= 400 else (err.type or "stream_error")
        return StepFailed(
            FailureKind.RETRYABLE,
            reason,
            f"the Anthropic API at {url} answered {status} ({detail})"
            if status >= 400
            else f"the Anthropic API at {url} reported an error inside its stream ({detail})",
            retry_after=asked,
        )
    return StepFailed(
        FailureKind.FATAL,
        f"http_{status}",
        f"the Anthropic API at {url} refused the request: {status} {detail}",
    )

"""The API's own word on the organisation's rate limits, read from response headers.

Every answer of the Messages API (errors included) carries `anthropic-ratelimit-*`
headers: per dimension (requests, input tokens, output tokens) the limit, what is left,
and when it is fully replenished; a 429 also carries `retry-after`. The worker passes
them on with each result and failure, so the scheduler fits the limits it enforces for
the whole installation to what the API says is really left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict

_DIMENSIONS = ("requests", "input_tokens", "output_tokens")


class RateLimits(BaseModel):
    """One answer's rate-limit headers; None where a header was absent or unreadable."""

    model_config = ConfigDict(frozen=True)

    model: str
    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset: datetime | None = None
    input_tokens_limit: float | None = None
    input_tokens_remaining: float | None = None
    input_tokens_reset: datetime | None = None
    output_tokens_limit: float | None = None
    output_tokens_remaining: float | None = None
    output_tokens_reset: datetime | None = None
    retry_after: float | None = None
    """Seconds, from `retry-after-ms` or `retry-after`."""
    first_answer_time: datetime | None = None
    """When the answer to the latest call began (not a header: the worker's clock);
    the API counted the call before then."""


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        found = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` or `retry-after` (seconds; an HTTP date is not worth parsing)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = _number(headers.get(name))
        if value is not None:
            return value * scale
    return None


def from_headers(headers: Mapping[str, str], model: str) -> RateLimits | None:
    """The report in `headers` (case-insensitive mapping); None when it has none."""
    values: dict[str, object] = {}
    for dimension in _DIMENSIONS:
        prefix = f"anthropic-ratelimit-{dimension.replace('_', '-')}"
        values[f"{dimension}_limit"] = _number(headers.get(f"{prefix}-limit"))
        values[f"{dimension}_remaining"] = _number(headers.get(f"{prefix}-remaining"))
        values[f"{dimension}_reset"] = _time(headers.get(f"{prefix}-reset"))
    values["retry_after"] = retry_after_seconds(headers)
    if all(value is None for value in values.values()):
        return None
    return RateLimits.model_validate({"model": model, **values})

"""Model capacity: the organisation's rate limits, enforced before dispatch.

An Anthropic organisation has, per model, a budget of requests, input tokens and output
tokens per minute, refilled continuously (a token bucket). Every worker that hits a
429 on its own only makes the next one hit it too; the scheduler sees every dispatch,
so it keeps one bucket per model and dimension and admits a call only when all three
have room for what the call is expected to take. What calls really took is settled
afterwards; what the API reports (`anthropic-ratelimit-*` headers) corrects the
buckets; a 429's retry-after pauses the model for everyone.

This module is the arithmetic, free of time sources and I/O; the store keeps the
buckets (shared by every scheduler on PostgreSQL) and scheduler/run_loop.py asks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum

# Anthropic's published Tier 1 limits for Claude Sonnet and Opus (per minute): the
# defaults until a setting or the API's own headers say otherwise.
DEFAULT_RPM = 50.0
DEFAULT_INPUT_TPM = 30_000.0
DEFAULT_OUTPUT_TPM = 8_000.0


class Dimension(StrEnum):
    REQUESTS = "requests"
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute limits of one model."""

    rpm: float = DEFAULT_RPM
    input_tpm: float = DEFAULT_INPUT_TPM
    output_tpm: float = DEFAULT_OUTPUT_TPM

    def per_minute(self, dimension: Dimension) -> float:
        return {
            Dimension.REQUESTS: self.rpm,
            Dimension.INPUT_TOKENS: self.input_tpm,
            Dimension.OUTPUT_TOKENS: self.output_tpm,
        }[dimension]


def parse_limits(text: str) -> dict[str, Limits]:
    """`{"claude-sonnet-5-5": {"rpm": 1000, "input_tpm": 450000, "output_tpm": 90000},
    "*": {...}}` -> limits by model ('*' for every model not named).

    Raises:
        ValueError: not that shape, or a limit that is not a positive number.
    """
    if not text.strip():
        return {}
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("model limits must be a JSON object of model -> limits")
    found: dict[str, Limits] = {}
    for model, values in raw.items():
        if not isinstance(values, dict):
            raise ValueError(f"limits of {model!r} must be an object")
        unknown = set(values) - {"rpm", "input_tpm", "output_tpm"}
        if unknown:
            raise ValueError(f"limits of {model!r}: unknown {sorted(unknown)[0]!r}")
        for name, value in values.items():
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"limits of {model!r}: {name} must be a positive number")
        found[str(model)] = Limits(**{k: float(v) for k, v in values.items()})
    return found


@dataclass(frozen=True, slots=True)
class Demand:
    """What one model call is expected to take (estimated before, actual after)."""

    requests: float = 1.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0

    def of(self, dimension: Dimension) -> float:
        return {
            Dimension.REQUESTS: self.requests,
            Dimension.INPUT_TOKENS: self.input_tokens,
            Dimension.OUTPUT_TOKENS: self.output_tokens,
        }[dimension]


def estimate_demand(prompt_bytes: int, max_output_tokens: int) -> Demand:
    """A call's demand before it is made: about 4 bytes of prompt per input token; the
    output is counted at its cap (the API does the same until the call ends)."""
    return Demand(1.0, math.ceil(prompt_bytes / 4), float(max_output_tokens))


@dataclass(slots=True)
class Bucket:
    """A token bucket: holds up to `capacity`, refills `capacity` per minute.

    The level may go below zero: a call that took more than estimated leaves a debt
    that later calls wait out.
    """

    capacity: float
    level: float
    updated: float
    """Seconds since the epoch of the last refill."""

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60)
            self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` fits (0 if it fits now)."""
        self.refill(now)
        # A demand bigger than the whole bucket could never fit: let it through when
        # the bucket is full, rather than wait for ever.
        amount = min(amount, self.capacity)
        if self.level >= amount:
            return 0.0
        return (amount - self.level) * 60 / self.capacity


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class ModelCapacity:
    """One model's buckets, pause and circuit breaker, as stored."""

    model: str
    buckets: dict[Dimension, Bucket]
    paused_until: float = 0.0
    """A 429's retry-after: no call to this model before then, by anyone."""
    breaker: BreakerState = BreakerState.CLOSED
    overloads: list[float] = field(default_factory=list)
    """When recent overloads happened (within the breaker's window)."""
    opened_at: float = 0.0

    @classmethod
    def fresh(cls, model: str, limits: Limits, now: float) -> ModelCapacity:
        return cls(
            model=model,
            buckets={d: Bucket(limits.per_minute(d), limits.per_minute(d), now) for d in Dimension},
        )

    def wait_for(self, demand: Demand, now: float) -> tuple[float, str]:
        """Seconds until `demand` fits every bucket, and which limit holds it."""
        if self.paused_until > now:
            return self.paused_until - now, "the API asked us to wait (HTTP 429 retry-after)"
        worst, why = 0.0, ""
        for dimension, bucket in self.buckets.items():
            wait = bucket.wait_for(demand.of(dimension), now)
            if wait > worst:
                worst = wait
                why = f"{dimension.value} per minute ({bucket.capacity:g}) of {self.model}"
        return worst, why

    def take(self, demand: Demand, now: float) -> None:
        for dimension, bucket in self.buckets.items():
            bucket.refill(now)
            bucket.level -= demand.of(dimension)

    def settle(self, estimated: Demand, actual: Demand, now: float) -> None:
        """Gives back (or charges) the difference between what was reserved and used."""
        for dimension, bucket in self.buckets.items():
            bucket.refill(now)
            bucket.level += estimated.of(dimension) - actual.of(dimension)
            bucket.level = min(bucket.level, bucket.capacity)

    def observe(self, report: RateLimitReport, now: float) -> None:
        """What the API says: its limits and what is left now win over our estimate."""
        for dimension, (limit, remaining) in report.by_dimension().items():
            bucket = self.buckets[dimension]
            bucket.refill(now)
            if limit is not None and limit > 0:
                bucket.capacity = limit
            if remaining is not None:
                bucket.level = min(bucket.level, remaining)
        if report.retry_after:
            self.paused_until = max(self.paused_until, now + report.retry_after)


@dataclass(frozen=True, slots=True)
class RateLimitReport:
    """The `anthropic-ratelimit-*` and `retry-after` headers of one response."""

    requests_limit: float | None = None
    requests_remaining: float | None = None
    input_tokens_limit: float | None = None
    input_tokens_remaining: float | None = None
    output_tokens_limit: float | None = None
    output_tokens_remaining: float | None = None
    retry_after: float | None = None

    def by_dimension(self) -> dict[Dimension, tuple[float | None, float | None]]:
        return {
            Dimension.REQUESTS: (self.requests_limit, self.requests_remaining),
            Dimension.INPUT_TOKENS: (self.input_tokens_limit, self.input_tokens_remaining),
            Dimension.OUTPUT_TOKENS: (self.output_tokens_limit, self.output_tokens_remaining),
        }

    @property
    def empty(self) -> bool:
        return self == RateLimitReport()


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When sustained overload opens a model's breaker, and when to probe it again."""

    threshold: int = 3
    """Overloads (HTTP 529, overloaded_error) within `window` that open the breaker."""
    window: float = 60.0
    cool_down: float = 30.0
    """How long the breaker stays open before one probe call may go."""


def record_overload(capacity: ModelCapacity, policy: BreakerPolicy, now: float) -> bool:
    """Counts an overload; returns True when it opened the breaker."""
    capacity.overloads = [t for t in capacity.overloads if now - t < policy.window] + [now]
    if capacity.breaker is BreakerState.HALF_OPEN or (
        capacity.breaker is BreakerState.CLOSED and len(capacity.overloads) >= policy.threshold
    ):
        capacity.breaker = BreakerState.OPEN
        capacity.opened_at = now
        return True
    return False


def record_success(capacity: ModelCapacity) -> bool:
    """A call went through; returns True when that closed the breaker (a good probe)."""
    was_open = capacity.breaker is not BreakerState.CLOSED
    capacity.breaker = BreakerState.CLOSED
    capacity.overloads = []
    return was_open


def breaker_allows(capacity: ModelCapacity, policy: BreakerPolicy, now: float) -> bool:
    """Whether a call may go to the model now (an open breaker lets one probe through
    once it has cooled down, and turns half-open until that probe ends)."""
    if capacity.breaker is BreakerState.CLOSED:
        return True
    if capacity.breaker is BreakerState.OPEN and now - capacity.opened_at >= policy.cool_down:
        capacity.breaker = BreakerState.HALF_OPEN
        return True
    return False

"""Model capacity: the organisation's rate limits, enforced before dispatch.

An Anthropic organisation has, per model, a budget of requests, input tokens and output
tokens per minute. Every worker that hits a 429 on its own only makes the next one hit
it too; the scheduler sees every dispatch, so it keeps the account per model and admits
a call only when all three dimensions have room for what the call is expected to take.
What calls really took is settled afterwards; what the API reports
(`anthropic-ratelimit-*` headers) corrects the account; a 429's retry-after pauses the
model for everyone.

The account is a sliding window of grants, not a token bucket that starts full: a
bucket allows a full minute's burst on top of the minute's refill (twice the limit in
one minute), while a window keeps every minute, wherever it starts, within the limit.
A grant counts from when it is given until `window` after its `until`: the end of the
call it admitted (infinity while the call is in flight), or for a lease of capacity
handed out in advance, its last possible use. A call reaches the API somewhere between
its admission and its end, so no window of the API's ever holds more than the limit.

This module is the arithmetic, free of time sources and I/O; scheduler/limiter.py
queues the callers and scheduler/ledger*.py keep the grants (in the store on
PostgreSQL, shared by every scheduler).
"""

from __future__ import annotations

import heapq
import json
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum

# Anthropic's published Tier 4 limits for Claude Sonnet 4.x (per minute; see
# https://docs.claude.com/en/api/rate-limits): the defaults for every model that
# MAESTRO_SCHEDULER_MODEL_LIMITS does not name, until the API's own headers say less.
DEFAULT_RPM = 4_000.0
DEFAULT_INPUT_TPM = 2_000_000.0
DEFAULT_OUTPUT_TPM = 400_000.0


class Dimension(StrEnum):
    REQUESTS = "requests"
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"


_WORDS = {
    Dimension.REQUESTS: "requests per minute",
    Dimension.INPUT_TOKENS: "input tokens per minute",
    Dimension.OUTPUT_TOKENS: "output tokens per minute",
}


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
    "*": {...}}` -> limits by model ('*' for every model not named). A dimension left
    out keeps its default.

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
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"limits of {model!r}: {name} must be a positive number")
        found[str(model)] = Limits(**{k: float(v) for k, v in values.items()})
    return found


def account_name(api_key: str, model: str) -> str:
    """The account a call is held to: `KEY/MODEL` for a pool with its own API key
    (a label, never the key), else the model's name."""
    return f"{api_key}/{model}" if api_key else model


def limits_for(configured: dict[str, Limits], account: str) -> Limits:
    """An account's own limits (`KEY/MODEL`, then `KEY/*`), else its model's, else the
    '*' entry, else the documented defaults."""
    key, _, model = account.partition("/") if "/" in account else ("", "", account)
    found = configured.get(account) or (configured.get(f"{key}/*") if key else None)
    return found or configured.get(model) or configured.get("*") or Limits()


_KEY_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_api_keys(text: str) -> dict[str, str]:
    """`POOL=LABEL,...` (a pool is a persona with its own workers, or `*`) -> the label
    of the API key each pool's workers use.

    Raises:
        ValueError: an entry that is not POOL=LABEL, or a label that is not 1-64 of
            letters, digits, `_`, `.`, `-`.
    """
    found: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        pool, sep, label = (part.strip() for part in entry.partition("="))
        if not sep or not pool or not label:
            raise ValueError(f"entry {entry!r} is not POOL=LABEL")
        if not _KEY_LABEL.fullmatch(label):
            raise ValueError(f"label {label!r}: use 1-64 letters, digits, '_', '.', '-'")
        found[pool] = label
    return found


@dataclass(frozen=True, slots=True)
class Demand:
    """What model calls take (estimated before, actual after)."""

    requests: float = 1.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0

    def of(self, dimension: Dimension) -> float:
        return {
            Dimension.REQUESTS: self.requests,
            Dimension.INPUT_TOKENS: self.input_tokens,
            Dimension.OUTPUT_TOKENS: self.output_tokens,
        }[dimension]

    def __add__(self, other: Demand) -> Demand:
        return Demand(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
        )

    def __sub__(self, other: Demand) -> Demand:
        return Demand(
            self.requests - other.requests,
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
        )

    def covers(self, other: Demand) -> bool:
        return all(self.of(d) >= other.of(d) for d in Dimension)


NOTHING = Demand(0.0, 0.0, 0.0)

# The API counted a request before its answer began (the worker says when); this
# covers the clocks of two hosts apart: a call counts until a window after that.
SEND_MARGIN = 0.25


def estimate_demand(prompt_bytes: int, output_tokens: int) -> Demand:
    """A call's demand before it is made: about 4 bytes of prompt per input token, and
    the expected output (settled against what the call really wrote afterwards)."""
    return Demand(1.0, math.ceil(prompt_bytes / 4), float(output_tokens))


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
    model: str = ""
    resets: tuple[float | None, float | None, float | None] = (None, None, None)
    """Epoch seconds when requests, input and output tokens are fully replenished."""
    first_answer: float | None = None
    """Epoch seconds when the attempt's first request was sent (the worker's clock)."""

    def by_dimension(self) -> dict[Dimension, tuple[float | None, float | None]]:
        return {
            Dimension.REQUESTS: (self.requests_limit, self.requests_remaining),
            Dimension.INPUT_TOKENS: (self.input_tokens_limit, self.input_tokens_remaining),
            Dimension.OUTPUT_TOKENS: (self.output_tokens_limit, self.output_tokens_remaining),
        }

    def reset_of(self, dimension: Dimension) -> float | None:
        return self.resets[list(Dimension).index(dimension)]

    @property
    def empty(self) -> bool:
        return self == RateLimitReport(model=self.model, first_answer=self.first_answer)


@dataclass(slots=True, eq=False)
class Grant:
    """Capacity handed out at `at`, usable until `until`; it counts against every
    window that overlaps [at, until + window]."""

    at: float
    until: float
    amount: Demand


@dataclass(slots=True)
class ModelWindow:
    """One model's account: its grants within the window, its limits and its pause.

    Admission must stay cheap with thousands of grants in a window (4,000 requests a
    minute): the sums are kept as grants come and go, and grants leave through a heap
    ordered by when they stop counting, so a call with room costs O(log n).
    """

    model: str
    limits: Limits
    window: float = 60.0
    """Seconds of a "minute" (shorter in tests)."""
    paused_until: float = 0.0
    """A 429's retry-after: no call to this model before then, by anyone."""
    api_limits: dict[Dimension, float] = field(default_factory=dict)
    """Limits the API reported that are lower than the configured ones."""
    _total: Demand = NOTHING
    _expiring: list[tuple[float, int, Grant]] = field(default_factory=list)
    """(when it stops counting, tie-breaker, grant); stale entries are skipped."""
    _live: dict[int, Grant] = field(default_factory=dict)
    _seq: int = 0

    @classmethod
    def of(
        cls,
        model: str,
        limits: Limits,
        window: float,
        grants: list[Grant],
        paused_until: float = 0.0,
        api_limits: dict[Dimension, float] | None = None,
    ) -> ModelWindow:
        account = cls(model, limits, window, paused_until, dict(api_limits or {}))
        for grant in grants:
            account._add(grant)
        return account

    @property
    def grants(self) -> list[Grant]:
        return list(self._live.values())

    def limit(self, dimension: Dimension) -> float:
        configured = self.limits.per_minute(dimension)
        return min(configured, self.api_limits.get(dimension, configured))

    def _schedule(self, grant: Grant) -> None:
        if math.isfinite(grant.until):
            self._seq += 1
            heapq.heappush(self._expiring, (grant.until + self.window, self._seq, grant))

    def _add(self, grant: Grant) -> None:
        self._live[id(grant)] = grant
        self._total = self._total + grant.amount
        self._schedule(grant)

    def _expire(self, now: float) -> None:
        while self._expiring and self._expiring[0][0] <= now:
            ends, _, grant = heapq.heappop(self._expiring)
            if id(grant) in self._live and grant.until + self.window == ends:
                del self._live[id(grant)]
                self._total = self._total - grant.amount

    def used(self, now: float) -> Demand:
        self._expire(now)
        return self._total

    def left(self, now: float) -> Demand:
        used = self.used(now)
        return Demand(*(max(0.0, self.limit(d) - used.of(d)) for d in Dimension))

    def wait_for(self, demand: Demand, now: float) -> tuple[float, str]:
        """Seconds until `demand` fits every dimension (0: now), and which limit holds it.

        A demand bigger than a whole minute's limit could never fit: it goes when the
        window is empty rather than wait for ever.
        """
        if self.paused_until > now:
            return self.paused_until - now, f"{self.model}: the API asked us to wait (429)"
        total = self.used(now)
        worst, why = 0.0, ""
        ending: list[tuple[float, int, Grant]] | None = None
        for dimension in Dimension:
            limit = self.limit(dimension)
            need = min(demand.of(dimension), limit)
            used = total.of(dimension)
            if used + need <= limit:
                continue
            # Calls still in flight (until = inf) free nothing until they end: their
            # settlement wakes the waiters; until then look again within a window.
            wait = self.window
            if ending is None:
                ending = sorted(
                    entry
                    for entry in self._expiring
                    if id(entry[2]) in self._live and entry[2].until + self.window == entry[0]
                )
            for ends, _, grant in ending:
                used -= grant.amount.of(dimension)
                if used + need <= limit:
                    wait = ends - now
                    break
            if wait > worst:
                worst, why = wait, f"{self.model} {_WORDS[dimension]} ({limit:g})"
        return max(worst, 0.0), why

    def take(self, demand: Demand, now: float, until: float | None = None) -> Grant:
        grant = Grant(now, now if until is None else until, demand)
        self._add(grant)
        return grant

    def settle(self, grant: Grant, actual: Demand, now: float, sent: float | None = None) -> None:
        """The call `grant` admitted ended at `now` having used `actual`: that replaces
        the estimate, and the grant counts until a window after the request reached
        the API: `sent` (when its answer began, as the worker says) plus SEND_MARGIN,
        else now (the call reached the API before it ended)."""
        if id(grant) not in self._live:
            return  # already out of every window: nothing left to correct
        self._total = self._total + actual - grant.amount
        grant.amount = actual
        until = now if sent is None else min(now, max(sent + SEND_MARGIN, grant.at))
        if not math.isfinite(grant.until) or grant.until < until:
            grant.until = until
            self._schedule(grant)

    def observe(self, report: RateLimitReport, now: float) -> Grant | None:
        """What the API says wins over our own account where it says less is left:
        usage we did not see (another installation on the same key, calls a loop made
        beyond its estimate) is charged as a grant lasting until the API's reset.
        Returns that grant, if any."""
        external: dict[Dimension, float] = {}
        until = now
        for dimension, (limit, remaining) in report.by_dimension().items():
            if limit is not None and 0 < limit < self.limits.per_minute(dimension):
                self.api_limits[dimension] = limit
            if remaining is None:
                continue
            ours = self.limit(dimension) - self.used(now).of(dimension)
            if remaining < ours:
                external[dimension] = ours - remaining
                reset = report.reset_of(dimension)
                if reset is not None and reset > now:
                    until = max(until, reset - self.window)
        if report.retry_after:
            self.paused_until = max(self.paused_until, now + report.retry_after)
        if not external:
            return None
        amount = Demand(*(external.get(d, 0.0) for d in Dimension))
        return self.take(amount, now, until)

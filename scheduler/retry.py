"""The one error policy: given this failure of this attempt, what next?

Two kinds of failure are kept apart, each with its own clock (as Temporal has them):

- The platform's: the worker unreachable or draining, a worker gone silent, a
  scheduler restart or takeover. Never the user's failure: the same attempt is sent
  again with backoff until the step's deadline (all attempts and waits), and
  `max_attempts` is not consumed.
- The work's: the model's errors, an attempt that timed out, a bad result. Each
  consumes an attempt; retryable ones wait (longer for an overloaded model) and go
  again until `max_attempts`; the rest fail the step at once.

Whatever the kind, no retry is scheduled past the step's deadline: the step fails
then, naming the last failure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from maestro.workflow import RetryPolicy

MAX_RETRY_AFTER_SECONDS = 300.0


class FailureKind(StrEnum):
    PLATFORM = "platform"
    """Infrastructure: retried within the deadline, consumes no attempt."""
    RETRYABLE = "retryable"
    """The work failed but may succeed again (bad output, attempt timeout, 5xx)."""
    OVERLOADED = "overloaded"
    """The model is overloaded: retryable, with a long backoff."""
    RATE_LIMITED = "rate_limited"
    """The provider asked us to slow down: retryable after its retry-after."""
    FATAL = "fatal"
    """Retrying cannot help (bad request, bad key, budget exhausted)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with one dispatch."""

    kind: FailureKind
    message: str
    retry_after: float | None = None
    """Seconds the failing party asked us to wait."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failure."""

    retry_in: float | None
    """Seconds until the next dispatch; None fails the step."""
    consumes_attempt: bool
    reason: str


def backoff_seconds(initial: float, maximum: float, failures: int) -> float:
    """Exponential backoff with equal jitter (half fixed, half random), capped."""
    ceiling = min(maximum, initial * 2 ** max(failures - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


def decide(
    failure: Failure,
    *,
    attempt: int,
    dispatch: int,
    policy: RetryPolicy,
    seconds_to_deadline: float,
    platform_backoff: tuple[float, float],
    overload_backoff: tuple[float, float],
) -> Decision:
    """The next step after `failure` of dispatch `dispatch` of attempt `attempt`.

    Args:
        failure: what happened.
        attempt: the work attempt that failed (1 for the first).
        dispatch: how many times that attempt has been sent (1 for the first).
        policy: the step's retry policy (max_attempts, backoff).
        seconds_to_deadline: time left before the step's deadline.
        platform_backoff: (initial, max) seconds between platform retries.
        overload_backoff: (initial, max) seconds after an overloaded model: it needs
            minutes, not seconds, to clear.
    """
    asked = min(failure.retry_after or 0.0, MAX_RETRY_AFTER_SECONDS)
    if failure.kind is FailureKind.PLATFORM:
        delay = max(backoff_seconds(*platform_backoff, dispatch), asked)
        consumes = False
    elif failure.kind is FailureKind.FATAL:
        return Decision(None, True, failure.message)
    else:
        if attempt >= policy.max_attempts:
            return Decision(
                None,
                True,
                f"{failure.message} (attempt {attempt} of {policy.max_attempts}; no attempts left)",
            )
        if failure.kind is FailureKind.OVERLOADED:
            delay = backoff_seconds(*overload_backoff, attempt)
        else:
            delay = backoff_seconds(
                policy.initial_backoff.total_seconds(), policy.max_backoff.total_seconds(), attempt
            )
        delay = max(delay, asked)
        consumes = True
    if delay >= seconds_to_deadline:
        return Decision(
            None,
            consumes,
            f"{failure.message} (the step's deadline passes before it could be tried again)",
        )
    return Decision(delay, consumes, failure.message)

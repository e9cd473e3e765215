"""A circuit breaker per model: sustained overload stops calls to it for a while.

A model that answers 529 (or `overloaded_error` inside a stream) to one step will
answer the same to the next: every step retrying on its own only adds to the load.
After `threshold` overloads within `window` seconds the breaker opens: new calls wait
(within their step's deadline) or go to the step's declared fallback. After
`cool_down` one probe call may go (half-open); its success closes the breaker, its
overload opens it again. Pure arithmetic: scheduler/limiter.py keeps one per model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When sustained overload opens a model's breaker, and when to probe it again."""

    threshold: int = 3
    """Overloads (HTTP 529, overloaded_error) within `window` that open the breaker."""
    window: float = 60.0
    cool_down: float = 30.0
    """How long the breaker stays open before one probe call may go."""


@dataclass(slots=True)
class Breaker:
    """One model's breaker."""

    state: BreakerState = BreakerState.CLOSED
    overloads: list[float] = field(default_factory=list)
    """When recent overloads happened (within the policy's window)."""
    opened_at: float = 0.0
    probing: bool = False
    """A half-open probe is out."""


def record_overload(breaker: Breaker, policy: BreakerPolicy, now: float) -> bool:
    """Counts an overload; returns True when it opened the breaker."""
    breaker.overloads = [t for t in breaker.overloads if now - t < policy.window] + [now]
    if breaker.state is BreakerState.HALF_OPEN or (
        breaker.state is BreakerState.CLOSED and len(breaker.overloads) >= policy.threshold
    ):
        breaker.state = BreakerState.OPEN
        breaker.opened_at = now
        breaker.probing = False
        return True
    return False


def record_success(breaker: Breaker) -> bool:
    """A call went through; returns True when that closed the breaker (a good probe)."""
    was_open = breaker.state is not BreakerState.CLOSED
    breaker.state = BreakerState.CLOSED
    breaker.overloads = []
    breaker.probing = False
    return was_open


def breaker_wait(breaker: Breaker, policy: BreakerPolicy, now: float) -> float:
    """Seconds until a call may go to the model (0: now). An open breaker lets one probe
    through once it has cooled down, and turns half-open until that probe ends; while
    the probe is out the others wait a cool-down more (or for the probe's end)."""
    if breaker.state is BreakerState.CLOSED:
        return 0.0
    if breaker.state is BreakerState.OPEN:
        ready = breaker.opened_at + policy.cool_down
        if now < ready:
            return ready - now
        breaker.state = BreakerState.HALF_OPEN
    if not breaker.probing:
        breaker.probing = True
        return 0.0
    return policy.cool_down


def probe_ended(breaker: Breaker) -> None:
    """The probe went without telling whether the model recovered (another failure, a
    cancellation): the next call may probe."""
    breaker.probing = False

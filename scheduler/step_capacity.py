"""One run's side of model capacity: which model each step calls, admission of its
call, settling it, and the declared fallbacks.

A step starts on its primary route (the run's provider, the step's model). It moves to
its next declared fallback when the primary cannot serve it: its retryable failures
used up the step's attempts, or its model's circuit breaker is open. The route is kept
in memory: a scheduler that takes a run over starts its steps on the primary again
(whose attempts are then spent, so a retryable failure moves on at once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from maestro.store import EventType, Lease, Store, Usage
from maestro.workflow import WorkflowSpec
from maestro.workflow.fallback import Fallback
from scheduler.capacity import (
    Demand,
    Dimension,
    RateLimitReport,
    account_name,
    estimate_demand,
)
from scheduler.limiter import (
    BreakerChange,
    BreakerOpen,
    CallOutcome,
    CapacityLimiter,
    CapacityWaitTimeout,
    Ticket,
)
from scheduler.models import CallRequest
from scheduler.retry import Failure, FailureKind
from scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

LIMITED_PROVIDER = "anthropic"


@dataclass(frozen=True, slots=True)
class Route:
    """What a step's next dispatch uses."""

    provider: str
    """As requested from the worker ("" for the worker's default)."""
    model: str
    """As requested ("" for the worker's default)."""
    fallback: int = 0
    """0 for the primary; n for the n-th declared fallback."""
    why: str = ""
    """Why the step left its primary (empty on the primary)."""

    def label(self) -> str:
        """What a fallback result says about itself."""
        used = ", ".join(
            part
            for part in (
                f"provider {self.provider}" if self.provider else "",
                f"model {self.model}" if self.model else "",
            )
            if part
        )
        return f"[fallback {self.fallback}: {used}, because {self.why}]"


Persist = Callable[..., Awaitable[object]]


class StepCapacity:
    """Routes, admission and settlement for the steps of one run."""

    def __init__(
        self,
        *,
        limiter: CapacityLimiter | None,
        settings: SchedulerSettings,
        spec: WorkflowSpec,
        run_provider: str,
        store: Store,
        lease: Lease,
        persist: Callable[..., Awaitable[None]],
        api_key_of: Callable[[str], str] = lambda step_id: "",
    ) -> None:
        self._limiter = limiter
        self._api_key_of = api_key_of
        """The label of the API key a step's workers call with ("": the one key)."""
        self._settings = settings
        self._spec = spec
        self._run_provider = run_provider
        self._store = store
        self._lease = lease
        self._persist = persist
        self._routes: dict[str, Route] = {}
        self._tickets: dict[str, Ticket] = {}
        """The admitted call of each step still to settle: its first, or its latest."""
        self._settled: dict[str, Demand] = {}
        """What the attempt's calls before its current ticket used (settled already)."""

    def route(self, step_id: str) -> Route:
        found = self._routes.get(step_id)
        if found is None:
            found = Route(self._run_provider, self._spec.model_for(step_id) or "")
            self._routes[step_id] = found
        return found

    def limits_calls(self, step_id: str) -> bool:
        """Whether the step's calls are held to a model's limits (so its worker asks
        before each call after the first)."""
        return self._limited_account(step_id) is not None

    def _limited_account(self, step_id: str) -> str | None:
        """The account whose capacity the step's calls use (its model, or KEY/MODEL
        when its workers call with a key of their own); None when not limited."""
        route = self.route(step_id)
        provider = route.provider or self._settings.worker_provider
        if self._limiter is None or provider != LIMITED_PROVIDER:
            return None
        return account_name(self._api_key_of(step_id), route.model or self._settings.default_model)

    def _next_fallback(self, step_id: str) -> Fallback | None:
        declared = self._spec.fallback_for(step_id)
        current = self.route(step_id).fallback
        return declared[current] if current < len(declared) else None

    async def take_fallback(self, step_id: str, why: str) -> Route | None:
        """Moves the step to its next declared fallback (STEP_FALLBACK); None if it has
        none left."""
        fallback = self._next_fallback(step_id)
        if fallback is None:
            return None
        current = self.route(step_id)
        provider = fallback.provider or current.provider
        model = fallback.model or (current.model if provider != "offline" else "")
        if fallback.provider == "anthropic" and not fallback.model:
            model = current.model
        route = Route(provider, model, current.fallback + 1, why)
        self._routes[step_id] = route
        log.warning("step %s uses fallback %d (%s): %s", step_id, route.fallback, fallback, why)
        await self._persist(
            "recording a fallback",
            self._store.note_capacity,
            self._lease,
            EventType.STEP_FALLBACK,
            f"{step_id} uses fallback {route.fallback} ({fallback.describe()}): {why}",
            step_id,
            {
                "fallback": str(route.fallback),
                # Only what the fallback sets: an empty value is the worker's default.
                **({"provider": provider} if provider else {}),
                **({"model": model} if model else {}),
                "reason": why,
            },
        )
        return route

    async def admit(
        self,
        step_id: str,
        *,
        prompt_bytes: Callable[[], int],
        run_order: float,
        deadline: float,
        on_wait: Callable[[str], Awaitable[None]],
    ) -> None:
        """Waits until the step's call may go to its model (moving to a fallback when the
        model's breaker is open and one is declared). `prompt_bytes` is asked only for a
        step held to a model's limits (it walks the step's ancestors).

        Raises:
            CapacityWaitTimeout: the step's deadline passed first.
        """
        while True:
            model = self._limited_account(step_id)
            if model is None:
                return
            demand = estimate_demand(
                prompt_bytes() + self._settings.prompt_overhead_bytes,
                self._settings.output_estimate_tokens,
            )
            try:
                self._settled[step_id] = Demand(0, 0, 0)
                self._tickets[step_id] = await self._limiter.admit(  # type: ignore[union-attr]
                    model=model,
                    demand=demand,
                    run_id=self._lease.run_id,
                    run_order=run_order,
                    deadline=deadline,
                    on_wait=on_wait,
                    has_fallback=self._next_fallback(step_id) is not None,
                )
                return
            except BreakerOpen as closed:
                if await self.take_fallback(step_id, closed.reason) is None:
                    raise  # unreachable: has_fallback said there was one

    async def admit_call(
        self,
        step_id: str,
        ask: CallRequest,
        *,
        run_order: float,
        deadline: float,
        on_wait: Callable[[str], Awaitable[None]],
    ) -> str:
        """Admits the next model call of a running attempt (an agent loop's next turn):
        settles the calls before it with what they used, then waits for room.

        Returns:
            "" once admitted, or why not (the attempt's deadline passed first).
        """
        ticket = self._tickets.pop(step_id, None)
        if ticket is None or self._limiter is None:
            return ""  # not limited: nothing to hold the call to
        if ask.usage is not None:
            await self._settle_ticket(
                step_id,
                ticket,
                actual=self._unsettled(step_id, ask.usage, ask.calls_made),
                report=ask.rate_limits,
                outcome=CallOutcome.SUCCEEDED,  # the call answered: the loop went on
            )
        else:  # a worker that did not say: the estimate stands, until now
            await self._settle_ticket(
                step_id,
                ticket,
                actual=ticket.reservation.estimate,
                report=ask.rate_limits,
                outcome=CallOutcome.SUCCEEDED,
            )
        demand = Demand(1, float(ask.input_tokens), float(self._settings.output_estimate_tokens))
        try:
            self._tickets[step_id] = await self._limiter.admit(
                model=ticket.model,
                demand=demand,
                run_id=self._lease.run_id,
                run_order=run_order,
                deadline=deadline,
                on_wait=on_wait,
            )
        except CapacityWaitTimeout as late:
            return str(late)
        return ""

    def _unsettled(self, step_id: str, usage: Usage, calls: int) -> Demand:
        """What the attempt used beyond what its earlier tickets settled."""
        # Input tokens as the API counts them against the limit: cache reads are free
        # of it on current models, cache writes are not.
        total = Demand(
            float(calls),
            float(usage.input_tokens + usage.cache_write_tokens),
            float(usage.output_tokens),
        )
        settled = self._settled.get(step_id, Demand(0, 0, 0))
        self._settled[step_id] = total
        return Demand(*(max(total.of(d) - settled.of(d), 0.0) for d in Dimension))

    async def settle(
        self,
        step_id: str,
        *,
        usage: Usage | None,
        calls: int | None,
        report: RateLimitReport | None,
        failure: Failure | None,
    ) -> None:
        """Ends the step's admitted call (its last, when the worker asked per call):
        settles the estimate with what it used, applies the API's report, and records
        breaker changes and pauses as events."""
        ticket = self._tickets.pop(step_id, None)
        if ticket is None or self._limiter is None:
            return
        actual: Demand | None = None
        if usage is not None and calls is not None:
            actual = self._unsettled(step_id, usage, calls)
        if failure is None:
            outcome = CallOutcome.SUCCEEDED
        elif failure.kind is FailureKind.OVERLOADED:
            outcome = CallOutcome.OVERLOADED
        else:
            outcome = CallOutcome.OTHER
        await self._settle_ticket(step_id, ticket, actual=actual, report=report, outcome=outcome)

    async def _settle_ticket(
        self,
        step_id: str,
        ticket: Ticket,
        *,
        actual: Demand | None,
        report: RateLimitReport | None,
        outcome: CallOutcome,
    ) -> None:
        assert self._limiter is not None
        change = await self._limiter.settle(ticket, actual=actual, report=report, outcome=outcome)
        if change is not None:
            await self._breaker_event(step_id, change)
        if report is not None and report.retry_after:
            await self._persist(
                "recording a pause",
                self._store.note_capacity,
                self._lease,
                EventType.MODEL_PAUSED,
                f"{ticket.model} paused for {report.retry_after:g}s: the API answered 429 "
                "with retry-after; no call to it goes out from any run until then",
                step_id,
                {
                    "model": ticket.model,
                    "retry_after_seconds": f"{report.retry_after:g}",
                    "paused_until": f"{time.time() + report.retry_after:.3f}",
                },
            )

    async def release(self, step_id: str) -> None:
        """The step's call was never made (cancelled, drained): gives its capacity back."""
        ticket = self._tickets.pop(step_id, None)
        if ticket is not None and self._limiter is not None:
            await self._limiter.settle(
                ticket, actual=Demand(0, 0, 0), report=None, outcome=CallOutcome.OTHER
            )

    async def _breaker_event(self, step_id: str, change: BreakerChange) -> None:
        if change.state.value == "open":
            type_ = EventType.BREAKER_OPENED
            message = (
                f"{change.model} circuit breaker opened after {change.overloads} overloads: "
                "calls to it wait or use a declared fallback"
            )
        else:
            type_ = EventType.BREAKER_CLOSED
            message = f"{change.model} circuit breaker closed: a probe call succeeded"
        await self._persist(
            "recording a breaker change",
            self._store.note_capacity,
            self._lease,
            type_,
            message,
            step_id,
            {
                "model": change.model,
                "state": change.state.value,
                "overloads": str(change.overloads),
                "window_seconds": f"{self._settings.breaker_window_seconds:g}",
            },
        )

"""Admission of model calls: a step's call goes out only when its model has room.

Each model has one queue of waiting steps, served fairly across runs (the run with
the fewest calls out goes first, then the older run), by one pump task that asks the
ledger for the head's demand and sleeps until it fits (or until something frees
capacity: a settled estimate, a closed breaker). A call that fits and finds nobody
waiting goes at once, with no task switch and (LocalLedger, or a lease with room on
PostgreSQL) no I/O.

The model's circuit breaker is checked first: while it is open a step with a declared
fallback is told so at once (BreakerOpen) and uses it; a step without one waits, within
its deadline, for the half-open probe to close the breaker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from scheduler.breaker import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    breaker_wait,
    probe_ended,
    record_overload,
    record_success,
)
from scheduler.capacity import Demand, Dimension, Limits, RateLimitReport, limits_for
from scheduler.ledger import Ledger, Reservation

log = logging.getLogger(__name__)


class CapacityWaitTimeout(Exception):
    """The step's deadline passed while it waited for capacity."""


class BreakerOpen(Exception):
    """The model's breaker is open and the caller has somewhere else to go."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(reason)
        self.model = model
        self.reason = reason


class CallOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    OVERLOADED = "overloaded"
    OTHER = "other"
    """Failed for another reason, or never made: says nothing about overload."""


@dataclass(eq=False, slots=True)
class Ticket:
    """One admitted call, to be settled when it ends."""

    model: str
    run_id: str
    reservation: Reservation
    probe: bool = False


@dataclass(frozen=True, slots=True)
class ModelView:
    """One model's capacity as this scheduler sees it (for `maestro status`)."""

    model: str
    breaker: BreakerState
    overloads: int
    limits: Demand
    used: Demand | None
    """What the window holds; None when the account is shared in the database."""
    paused_until: float
    waiting: int


@dataclass(frozen=True, slots=True)
class BreakerChange:
    model: str
    state: BreakerState
    overloads: int


@dataclass(eq=False)
class _Waiter:
    run_id: str
    run_order: float
    seq: int
    demand: Demand
    future: asyncio.Future[Ticket] = field(repr=False)
    has_fallback: bool = False


@dataclass(eq=False)
class _Queue:
    waiters: list[_Waiter] = field(default_factory=list)
    pump: asyncio.Task[None] | None = None
    poke: asyncio.Event = field(default_factory=asyncio.Event)


OnWait = Callable[[str], Awaitable[None]]


class CapacityLimiter:
    """Admits model calls within each model's limits and breaker, fairly across runs."""

    def __init__(
        self,
        ledger: Ledger,
        limits: dict[str, Limits],
        policy: BreakerPolicy,
        *,
        clock: Callable[[], float] = time.time,
        on_breaker: Callable[[BreakerChange], None] | None = None,
    ) -> None:
        self._ledger = ledger
        self._limits = limits
        self._policy = policy
        self._clock = clock
        self._on_breaker = on_breaker
        self._queues: dict[str, _Queue] = {}
        self._breakers: dict[str, Breaker] = {}
        self._by_run: Counter[str] = Counter()
        self._seq = itertools.count()
        self.waited = Counter[str]()
        """Calls that had to wait, by model (for metrics)."""

    def limits(self, model: str) -> Limits:
        return limits_for(self._limits, model)

    def breaker(self, model: str) -> Breaker:
        found = self._breakers.get(model)
        if found is None:
            found = self._breakers[model] = Breaker()
        return found

    @property
    def breakers(self) -> dict[str, Breaker]:
        return dict(self._breakers)

    @property
    def waiting(self) -> int:
        return sum(len(q.waiters) for q in self._queues.values())

    def view(self) -> list[ModelView]:
        """Every model seen (admitted to, or overloaded), by name."""
        now = self._clock()
        accounts = self._ledger.snapshot(now)
        models = sorted({*accounts, *self._breakers, *self._queues})
        views = []
        for model in models:
            configured = self.limits(model)
            used, limits, paused = accounts.get(
                model, (None, Demand(*(configured.per_minute(d) for d in Dimension)), 0.0)
            )
            breaker = self.breaker(model)
            queue = self._queues.get(model)
            views.append(
                ModelView(
                    model=model,
                    breaker=breaker.state,
                    overloads=len(breaker.overloads),
                    limits=limits,
                    used=used,
                    paused_until=paused,
                    waiting=len(queue.waiters) if queue is not None else 0,
                )
            )
        return views

    def _queue(self, model: str) -> _Queue:
        found = self._queues.get(model)
        if found is None:
            found = self._queues[model] = _Queue()
        return found

    def _open_reason(self, model: str) -> str:
        breaker = self.breaker(model)
        return (
            f"{model} circuit breaker {breaker.state.value} after {len(breaker.overloads)} "
            f"overloads within {self._policy.window:g}s"
        )

    async def _try(self, model: str, demand: Demand) -> tuple[Ticket | None, float, str]:
        """Admits now if the breaker and the ledger allow (no waiting)."""
        now = self._clock()
        breaker = self.breaker(model)
        if breaker.state is not BreakerState.CLOSED:
            # Peek without taking the probe: the ledger may still say no.
            if breaker.state is BreakerState.OPEN and now < breaker.opened_at + (
                self._policy.cool_down
            ):
                return (
                    None,
                    breaker.opened_at + self._policy.cool_down - now,
                    (self._open_reason(model)),
                )
            if breaker.probing:
                return None, self._policy.cool_down, self._open_reason(model)
        reservation, wait, why = await self._ledger.reserve(model, self.limits(model), demand, now)
        if reservation is None:
            return None, wait, why
        probe = breaker.state is not BreakerState.CLOSED
        if probe:
            breaker_wait(breaker, self._policy, self._clock())  # takes the probe
        return Ticket(model, "", reservation, probe), 0.0, ""

    async def admit(
        self,
        *,
        model: str,
        demand: Demand,
        run_id: str,
        run_order: float,
        deadline: float,
        on_wait: OnWait,
        has_fallback: bool = False,
    ) -> Ticket:
        """Waits until a call of `demand` to `model` may go; returns its ticket.

        Args:
            deadline: epoch seconds; waiting past it raises CapacityWaitTimeout.
            on_wait: called once, with the reason, when the call has to wait.
            has_fallback: an open breaker raises BreakerOpen instead of waiting.

        Raises:
            BreakerOpen, CapacityWaitTimeout.
        """
        queue = self._queue(model)
        breaker = self.breaker(model)
        if has_fallback and breaker.state is not BreakerState.CLOSED:
            cooling = breaker.state is BreakerState.OPEN and self._clock() < (
                breaker.opened_at + self._policy.cool_down
            )
            if cooling or breaker.probing:
                # Go elsewhere rather than wait; once cooled down, the first call
                # (with a fallback or not) is the probe that may close the breaker.
                raise BreakerOpen(model, self._open_reason(model))
        why = ""
        if not queue.waiters:
            ticket, _, why = await self._try(model, demand)
            if ticket is not None:
                return self._granted(ticket, run_id)
        else:
            why = f"{len(queue.waiters)} calls to {model} wait before it"
        waiter = _Waiter(
            run_id,
            run_order,
            next(self._seq),
            demand,
            asyncio.get_running_loop().create_future(),
            has_fallback,
        )
        queue.waiters.append(waiter)
        self.waited[model] += 1
        if queue.pump is None or queue.pump.done():
            queue.pump = asyncio.create_task(self._pump(model), name=f"capacity-{model}")
        try:
            await on_wait(f"waiting for capacity: {why}")
            async with asyncio.timeout(max(deadline - self._clock(), 0.0)):
                return await waiter.future
        except BaseException as err:
            if waiter in queue.waiters:
                queue.waiters.remove(waiter)
            elif (
                waiter.future.done()
                and not waiter.future.cancelled()
                and waiter.future.exception() is None
            ):
                # Granted as we gave up: give it back.
                await self.settle(
                    waiter.future.result(),
                    actual=Demand(0, 0, 0),
                    report=None,
                    outcome=CallOutcome.OTHER,
                )
            if isinstance(err, TimeoutError):
                raise CapacityWaitTimeout(
                    f"the step's deadline passed while it waited for capacity ({why})"
                ) from None
            raise

    def _granted(self, ticket: Ticket, run_id: str) -> Ticket:
        ticket.run_id = run_id
        self._by_run[run_id] += 1
        return ticket

    async def _pump(self, model: str) -> None:
        queue = self._queue(model)
        while queue.waiters:
            if self.breaker(model).state is not BreakerState.CLOSED:
                # The breaker opened while they waited: those with somewhere else to go
                # go there now rather than wait for the probe.
                reason = self._open_reason(model)
                for waiter in [w for w in queue.waiters if w.has_fallback]:
                    queue.waiters.remove(waiter)
                    if not waiter.future.done():
                        waiter.future.set_exception(BreakerOpen(model, reason))
                if not queue.waiters:
                    return
            head = min(queue.waiters, key=lambda w: (self._by_run[w.run_id], w.run_order, w.seq))
            if head.future.done():
                queue.waiters.remove(head)
                continue
            ticket, wait, _ = await self._try(model, head.demand)
            if ticket is not None:
                queue.waiters.remove(head)
                if head.future.done():  # cancelled while we asked the ledger
                    await self._ledger.settle(ticket.reservation, Demand(0, 0, 0), self._clock())
                    if ticket.probe:
                        probe_ended(self.breaker(model))
                    continue
                head.future.set_result(self._granted(ticket, head.run_id))
                continue
            queue.poke.clear()
            try:
                async with asyncio.timeout(max(wait, 0.001)):
                    await queue.poke.wait()
            except TimeoutError:
                pass

    def _poke(self, model: str) -> None:
        queue = self._queues.get(model)
        if queue is not None:
            queue.poke.set()

    async def settle(
        self,
        ticket: Ticket,
        *,
        actual: Demand | None,
        report: RateLimitReport | None,
        outcome: CallOutcome,
    ) -> BreakerChange | None:
        """Ends an admitted call: what it used, what the API said, how it went.

        Returns the breaker's change of state, if the call changed it.
        """
        now = self._clock()
        model = ticket.model
        self._by_run[ticket.run_id] -= 1
        if self._by_run[ticket.run_id] <= 0:
            del self._by_run[ticket.run_id]
        if actual is not None:
            sent = report.first_answer if report is not None else None
            await self._ledger.settle(ticket.reservation, actual, now, sent)
        if report is not None and not report.empty:
            await self._ledger.observe(model, self.limits(model), report, now)
        breaker = self.breaker(model)
        change: BreakerChange | None = None
        if outcome is CallOutcome.OVERLOADED:
            if record_overload(breaker, self._policy, now):
                change = BreakerChange(model, BreakerState.OPEN, len(breaker.overloads))
        elif outcome is CallOutcome.SUCCEEDED:
            if record_success(breaker):
                change = BreakerChange(model, BreakerState.CLOSED, 0)
        elif ticket.probe:
            probe_ended(breaker)
        if change is not None:
            log.warning("circuit breaker of %s is now %s", model, change.state.value)
            if self._on_breaker is not None:
                self._on_breaker(change)
        self._poke(model)
        return change

    async def close(self) -> None:
        for queue in self._queues.values():
            if queue.pump is not None:
                queue.pump.cancel()
            for waiter in queue.waiters:
                if not waiter.future.done():
                    waiter.future.cancel()
        await self._ledger.close()

"""The capacity limiter: admission within a model's window, fair across runs, the
breaker's waits and fallbacks, a 429's pause for everyone (in-process ledger)."""

import asyncio
import time

import pytest

from scheduler.breaker import BreakerPolicy, BreakerState
from scheduler.capacity import Demand, Limits, RateLimitReport
from scheduler.ledger import LocalLedger
from scheduler.limiter import (
    BreakerOpen,
    CallOutcome,
    CapacityLimiter,
    CapacityWaitTimeout,
    Ticket,
)

CALL = Demand(1, 10, 10)


def _limiter(
    rpm: float, window: float = 0.5, policy: BreakerPolicy | None = None
) -> CapacityLimiter:
    return CapacityLimiter(
        LocalLedger(window), {"m": Limits(rpm, 1e9, 1e9)}, policy or BreakerPolicy()
    )


async def _admit(
    limiter: CapacityLimiter,
    run: str,
    order: float,
    reasons: list[str],
    deadline: float = 30.0,
    fallback: bool = False,
) -> Ticket:
    async def on_wait(reason: str) -> None:
        reasons.append(reason)

    return await limiter.admit(
        model="m",
        demand=CALL,
        run_id=run,
        run_order=order,
        deadline=time.time() + deadline,
        on_wait=on_wait,
        has_fallback=fallback,
    )


async def test_calls_beyond_the_limit_wait_visibly_and_go_in_fair_order() -> None:
    limiter = _limiter(rpm=2)
    reasons: list[str] = []
    first = [await _admit(limiter, "big", 1, reasons) for _ in range(2)]
    assert reasons == []  # room: no wait, no event
    order: list[str] = []
    admitted = asyncio.Event()

    async def one(run: str, run_order: float) -> None:
        ticket = await _admit(limiter, run, run_order, reasons)
        order.append(run)
        admitted.set()
        await limiter.settle(ticket, actual=CALL, report=None, outcome=CallOutcome.SUCCEEDED)

    tasks = [asyncio.create_task(one("big", 1)) for _ in range(3)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(one("small", 2)))
    await asyncio.sleep(0.05)
    assert order == []  # both calls in flight hold the window
    # One of big's calls ends; big still has one out: the small run goes first.
    await limiter.settle(first[0], actual=CALL, report=None, outcome=CallOutcome.SUCCEEDED)
    await asyncio.wait_for(admitted.wait(), 10)
    assert order == ["small"]
    await limiter.settle(first[1], actual=CALL, report=None, outcome=CallOutcome.SUCCEEDED)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert order == ["small", "big", "big", "big"]
    assert reasons[0] == "waiting for capacity: m requests per minute (2)"
    assert limiter.waited["m"] == 4


async def test_a_429_pauses_the_model_for_every_caller() -> None:
    limiter = _limiter(rpm=1000)
    ticket = await _admit(limiter, "a", 1, [])
    await limiter.settle(
        ticket, actual=CALL, report=RateLimitReport(retry_after=0.3), outcome=CallOutcome.OTHER
    )
    reasons: list[str] = []
    started = time.monotonic()
    await _admit(limiter, "b", 2, reasons)
    assert time.monotonic() - started >= 0.25
    assert "the API asked us to wait (429)" in reasons[0]


async def test_a_wait_past_the_deadline_fails_with_the_limit_named() -> None:
    limiter = _limiter(rpm=1, window=60)
    await _admit(limiter, "a", 1, [])
    with pytest.raises(CapacityWaitTimeout, match="requests per minute"):
        await _admit(limiter, "b", 2, [], deadline=0.2)
    assert limiter.waiting == 0


async def test_an_open_breaker_sends_fallback_steps_away_and_holds_the_others() -> None:
    limiter = _limiter(rpm=1000, policy=BreakerPolicy(threshold=2, window=60, cool_down=0.3))
    for _ in range(2):
        ticket = await _admit(limiter, "a", 1, [])
        change = await limiter.settle(
            ticket, actual=CALL, report=None, outcome=CallOutcome.OVERLOADED
        )
    assert change is not None and change.state is BreakerState.OPEN
    with pytest.raises(BreakerOpen, match="circuit breaker open"):
        await _admit(limiter, "b", 2, [], fallback=True)
    reasons: list[str] = []
    probe = await _admit(limiter, "c", 3, reasons)  # waits out the cool-down, then probes
    assert "circuit breaker open" in reasons[0]
    assert probe.probe and limiter.breaker("m").state is BreakerState.HALF_OPEN
    with pytest.raises(BreakerOpen):  # the probe is out: a step with a fallback goes on
        await _admit(limiter, "d", 4, [], fallback=True)
    change = await limiter.settle(probe, actual=CALL, report=None, outcome=CallOutcome.SUCCEEDED)
    assert change is not None and change.state is BreakerState.CLOSED
    await _admit(limiter, "d", 4, [], fallback=True)


async def test_a_waiter_with_a_fallback_leaves_when_the_breaker_opens() -> None:
    limiter = _limiter(rpm=1, window=60, policy=BreakerPolicy(threshold=1, cool_down=60))
    ticket = await _admit(limiter, "a", 1, [])
    waiting = asyncio.create_task(_admit(limiter, "b", 2, [], fallback=True))
    await asyncio.sleep(0.05)
    assert limiter.waiting == 1  # held by the rate limit
    await limiter.settle(ticket, actual=CALL, report=None, outcome=CallOutcome.OVERLOADED)
    with pytest.raises(BreakerOpen, match="circuit breaker open"):
        await asyncio.wait_for(waiting, 5)
    assert limiter.waiting == 0


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    limiter = _limiter(rpm=1, window=60)
    await _admit(limiter, "a", 1, [])
    waiting = asyncio.create_task(_admit(limiter, "b", 2, []))
    await asyncio.sleep(0.05)
    assert limiter.waiting == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limiter.waiting == 0
    await limiter.close()

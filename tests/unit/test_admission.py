"""Admission: a global cap on steps in flight, shared fairly between runs."""

import asyncio

import pytest

from scheduler.admission import Admission, AdmissionClosed


async def test_steps_beyond_the_cap_wait_and_the_run_holding_fewest_slots_goes_first() -> None:
    admission = Admission(max_in_flight=2)
    assert admission.try_acquire("big", "*")
    assert admission.try_acquire("big", "*")
    assert not admission.try_acquire("small", "*")
    order: list[str] = []

    async def wait(run_id: str, created: float) -> None:
        await admission.acquire(run_id, "*", created)
        order.append(run_id)

    # The big run was created first and asks again first; the small run holds nothing.
    waiters = [asyncio.create_task(wait("big", 1.0)), asyncio.create_task(wait("small", 2.0))]
    await asyncio.sleep(0)
    assert admission.waiting == 2
    admission.release("big", "*")
    await asyncio.sleep(0)
    assert order == ["small"]
    admission.release("big", "*")
    await asyncio.gather(*waiters)
    assert order == ["small", "big"]
    assert admission.in_flight == 2


async def test_a_pool_has_its_own_cap() -> None:
    admission = Admission(max_in_flight=10, pool_max_in_flight=1)
    assert admission.try_acquire("r", "code")
    assert not admission.try_acquire("r", "code")
    assert admission.try_acquire("r", "docs")
    assert "pool 'code'" in admission.why_full("code")


async def test_closing_wakes_waiters_and_refuses_new_dispatches() -> None:
    admission = Admission(max_in_flight=1)
    assert admission.try_acquire("r", "*")
    waiter = asyncio.create_task(admission.acquire("s", "*", 1.0))
    await asyncio.sleep(0)
    admission.close()
    with pytest.raises(AdmissionClosed):
        await waiter
    with pytest.raises(AdmissionClosed):
        admission.try_acquire("t", "*")


async def test_a_waiter_cancelled_as_it_is_granted_gives_the_slot_back() -> None:
    admission = Admission(max_in_flight=1)
    assert admission.try_acquire("r", "*")
    waiter = asyncio.create_task(admission.acquire("s", "*", 1.0))
    await asyncio.sleep(0)
    admission.release("r", "*")  # grants the slot to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.in_flight == 0

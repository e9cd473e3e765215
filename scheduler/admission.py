"""Admission: how many steps this scheduler has at the workers, fairly shared by runs.

Every dispatch takes a slot, globally (`max_steps_in_flight`) and in its worker pool
(`pool_max_in_flight`). When none is free the step waits, visibly (QUEUED). Slots go
to the waiting run that holds the fewest slots now, the older run first on a tie: a
big run cannot starve a small one, and runs start in the order they were created.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Waiter:
    run_id: str
    pool: str
    run_order: float
    seq: int
    future: asyncio.Future[None] = field(repr=False)


class AdmissionClosed(Exception):
    """The scheduler is draining: no new dispatch may start."""


class Admission:
    def __init__(self, *, max_in_flight: int, pool_max_in_flight: int = 0) -> None:
        self._max = max_in_flight
        self._pool_max = pool_max_in_flight
        self._in_flight = 0
        self._by_pool: Counter[str] = Counter()
        self._by_run: Counter[str] = Counter()
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._closed = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _fits(self, pool: str) -> bool:
        if self._in_flight >= self._max:
            return False
        return not (self._pool_max and self._by_pool[pool] >= self._pool_max)

    def why_full(self, pool: str) -> str:
        """Which limit holds a step of this pool back, in words."""
        if self._in_flight >= self._max:
            return f"{self._in_flight} steps in flight, the scheduler's limit is {self._max}"
        return (
            f"{self._by_pool[pool]} steps in flight in pool {pool!r}, its limit is {self._pool_max}"
        )

    def try_acquire(self, run_id: str, pool: str) -> bool:
        """Takes a slot if one is free and nobody waits for it; never waits."""
        if self._closed:
            raise AdmissionClosed
        if self._waiters or not self._fits(pool):
            return False
        self._take(run_id, pool)
        return True

    async def acquire(self, run_id: str, pool: str, run_order: float) -> None:
        """Waits for a slot (fair across runs).

        Raises:
            AdmissionClosed: the scheduler started draining.
        """
        if self.try_acquire(run_id, pool):
            return
        waiter = _Waiter(
            run_id, pool, run_order, next(self._seq), asyncio.get_running_loop().create_future()
        )
        self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif (
                waiter.future.done()
                and not waiter.future.cancelled()
                and (waiter.future.exception() is None)
            ):
                self.release(run_id, pool)  # granted as we were cancelled: give it back
            raise

    def release(self, run_id: str, pool: str) -> None:
        self._in_flight -= 1
        self._by_pool[pool] -= 1
        self._by_run[run_id] -= 1
        if self._by_run[run_id] <= 0:
            del self._by_run[run_id]
        self._grant()

    def close(self) -> None:
        """Refuses every new dispatch, and wakes the waiters with AdmissionClosed."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(AdmissionClosed())
        self._waiters.clear()

    def _take(self, run_id: str, pool: str) -> None:
        self._in_flight += 1
        self._by_pool[pool] += 1
        self._by_run[run_id] += 1

    def _grant(self) -> None:
        while self._waiters:
            candidates = [w for w in self._waiters if self._fits(w.pool)]
            if not candidates:
                return
            chosen = min(candidates, key=lambda w: (self._by_run[w.run_id], w.run_order, w.seq))
            self._waiters.remove(chosen)
            if chosen.future.done():
                continue
            self._take(chosen.run_id, chosen.pool)
            chosen.future.set_result(None)

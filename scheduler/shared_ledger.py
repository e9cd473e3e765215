"""The capacity account shared by every scheduler of an installation (PostgreSQL).

A round trip to the database for every call would cost more than the call's whole
admission is allowed to (under a millisecond), so each scheduler leases a batch: the
call that needs capacity plus a small share of the minute's limit
(`capacity_lease_fraction`), usable for `capacity_lease_seconds`. Calls that fit the
batch are admitted from memory; the next lease gives back what an expired batch did
not use. A lease counts in the shared table until its end plus
`capacity_skew_seconds` (the longest a call admitted from it may take to reach the
API) plus a window, so the installation as a whole never exceeds a limit in any window.

A 429's pause is written to the model's row and seen by every scheduler at its next
lease (within a lease's length); the scheduler that got it stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from maestro.store import Store
from maestro.store import capacity_sql as sql
from maestro.store.db import StoreUnavailable, to_us
from scheduler.capacity import (
    SEND_MARGIN,
    Demand,
    Dimension,
    Grant,
    Limits,
    ModelWindow,
    RateLimitReport,
)
from scheduler.ledger import Reservation

log = logging.getLogger(__name__)

# How long a step waits before asking an unreachable shared account again.
_OUTAGE_RETRY_SECONDS = 1.0

_US = 1_000_000


@dataclass(slots=True)
class _Slice:
    lease_id: int
    left: Demand
    expires: float


def _demand(amount: sql.Amount) -> Demand:
    return Demand(*amount)


def _amount(demand: Demand) -> sql.Amount:
    return (demand.requests, demand.input_tokens, demand.output_tokens)


class SharedLedger:
    """Leases capacity from the store's shared account, in batches."""

    def __init__(
        self,
        store: Store,
        *,
        window: float,
        lease_seconds: float,
        lease_fraction: float,
        skew: float,
    ) -> None:
        self._store = store
        self._window = window
        self._lease_seconds = lease_seconds
        self._fraction = lease_fraction
        self._skew = skew
        self._slices: dict[str, _Slice] = {}
        self._paused: dict[str, float] = {}
        self._api_limits: dict[str, dict[Dimension, float]] = {}
        self._limits: dict[str, Limits] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.round_trips = 0
        """Leases taken from the database (for the bench)."""

    def _account(self, model: str, rows: list[sql.GrantRow], paused_us: int) -> ModelWindow:
        return ModelWindow.of(
            model,
            self._limits[model],
            self._window,
            [Grant(r.granted_time / _US, r.until_time / _US, _demand(r.amount)) for r in rows],
            paused_until=paused_us / _US,
            api_limits=self._api_limits.get(model, {}),
        )

    async def reserve(
        self, model: str, limits: Limits, demand: Demand, now: float
    ) -> tuple[Reservation | None, float, str]:
        self._limits[model] = limits
        paused = self._paused.get(model, 0.0)
        if paused > now:
            return None, paused - now, f"{model}: the API asked us to wait (429)"
        current = self._slices.get(model)
        if current is not None and current.expires > now and current.left.covers(demand):
            current.left = current.left - demand
            return Reservation(model, demand, lease_id=current.lease_id), 0.0, ""
        lock = self._locks.setdefault(model, asyncio.Lock())
        async with lock:
            return await self._lease(model, limits, demand)

    async def _lease(
        self, model: str, limits: Limits, demand: Demand
    ) -> tuple[Reservation | None, float, str]:
        old = self._slices.pop(model, None)
        give_back = (old.lease_id, _amount(old.left)) if old is not None else None
        extra = Demand(*(limits.per_minute(d) * self._fraction for d in Dimension))

        def decide(
            rows: list[sql.GrantRow], paused_us: int, now_us: int
        ) -> tuple[sql.Amount | None, float, str]:
            account = self._account(model, rows, paused_us)
            now = now_us / _US
            wait, why = account.wait_for(demand, now)
            if wait > 0:
                return None, wait, why
            left = account.left(now) - demand
            more = Demand(*(max(0.0, min(extra.of(d), left.of(d))) for d in Dimension))
            return _amount(demand + more), 0.0, ""

        until = to_us(self._clock() + self._lease_seconds + self._skew)
        self.round_trips += 1
        try:
            lease_id, amount, wait, why, paused_us = await self._store.db.write(
                sql.lease,
                model,
                round(self._window * _US),
                until,
                decide,
                give_back,
            )
        except StoreUnavailable:
            # The shared account is out of reach: the step waits (visibly) and asks
            # again, as it would for capacity; an outage never fails a run.
            return None, _OUTAGE_RETRY_SECONDS, f"{model}: the capacity account is unavailable"
        self._paused[model] = paused_us / _US
        if lease_id is None or amount is None:
            return None, wait, why
        granted = _demand(amount)
        self._slices[model] = _Slice(
            lease_id, granted - demand, self._clock() + self._lease_seconds
        )
        return Reservation(model, demand, lease_id=lease_id), 0.0, ""

    @staticmethod
    def _clock() -> float:
        return time.time()

    async def settle(
        self, reservation: Reservation, actual: Demand, now: float, sent: float | None = None
    ) -> None:
        model = reservation.model
        over = Demand(*(max(0.0, actual.of(d) - reservation.estimate.of(d)) for d in Dimension))
        under = Demand(*(max(0.0, reservation.estimate.of(d) - actual.of(d)) for d in Dimension))
        current = self._slices.get(model)
        if current is not None and current.lease_id == reservation.lease_id:
            # Not used: back into the batch it came from (the lease still holds it).
            current.left = current.left + under
        if reservation.lease_id is not None:
            charged = _amount(over) if any(over.of(d) > 0 for d in Dimension) else None
            reached = now if sent is None else min(now, sent + SEND_MARGIN)
            try:
                await self._store.db.write(
                    sql.settle, model, reservation.lease_id, to_us(reached), charged
                )
            except StoreUnavailable as err:
                # The grant keeps its estimate until its lease ends: counted too much
                # for a while, never too little.
                log.warning("capacity of %s not settled (%s); kept as estimated", model, err)

    async def observe(
        self, model: str, limits: Limits, report: RateLimitReport, now: float
    ) -> None:
        self._limits[model] = limits
        for dimension, (limit, _) in report.by_dimension().items():
            if limit is not None and 0 < limit < limits.per_minute(dimension):
                self._api_limits.setdefault(model, {})[dimension] = limit
        pause = now + report.retry_after if report.retry_after else 0.0
        if pause:
            self._paused[model] = max(self._paused.get(model, 0.0), pause)
            self._slices.pop(model, None)  # nothing more from the batch either

        def external(rows: list[sql.GrantRow], now_us: int) -> tuple[sql.Amount, int] | None:
            account = self._account(model, rows, 0)
            grant = account.observe(
                RateLimitReport(
                    requests_remaining=report.requests_remaining,
                    input_tokens_remaining=report.input_tokens_remaining,
                    output_tokens_remaining=report.output_tokens_remaining,
                    resets=report.resets,
                ),
                now_us / _US,
            )
            if grant is None:
                return None
            return _amount(grant.amount), to_us(grant.until)

        try:
            paused_us = await self._store.db.write(
                sql.observe, model, round(self._window * _US), to_us(pause), external
            )
        except StoreUnavailable as err:
            # This scheduler still honours the pause (set above); the others learn of
            # it from their own calls' answers.
            log.warning("the API's report on %s not shared (%s)", model, err)
            return
        self._paused[model] = max(self._paused.get(model, 0.0), paused_us / _US)

    def snapshot(self, now: float) -> dict[str, tuple[Demand | None, Demand, float]]:
        return {
            model: (
                None,  # in the database, shared by every scheduler
                Demand(*(limits.per_minute(d) for d in Dimension)),
                self._paused.get(model, 0.0),
            )
            for model, limits in self._limits.items()
        }

    async def close(self) -> None:
        self._slices.clear()

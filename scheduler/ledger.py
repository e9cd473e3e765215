"""Where the grants of model capacity are kept: in this process, or in the store.

One interface for both: `reserve` grants a demand now or says how long until it fits,
`settle` replaces an estimate with what was really used, `observe` applies what the
API said. On SQLite there is one scheduler and the account lives in its memory
(`LocalLedger`); on PostgreSQL every scheduler shares it through the store
(scheduler/shared_ledger.py), leasing capacity in small batches so that a dispatch
with room costs no database round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from scheduler.capacity import Demand, Dimension, Grant, Limits, ModelWindow, RateLimitReport


@dataclass(eq=False, slots=True)
class Reservation:
    """Capacity granted to one call: settled once the call ends."""

    model: str
    estimate: Demand
    grant: Grant | None = None
    """The grant in this process's account (LocalLedger)."""
    lease_id: int | None = None
    """The shared lease it was taken from (SharedLedger)."""


class Ledger(Protocol):
    async def reserve(
        self, model: str, limits: Limits, demand: Demand, now: float
    ) -> tuple[Reservation | None, float, str]:
        """Grants `demand` (a Reservation), or says how many seconds until it may fit
        and which limit holds it (None, wait, why)."""
        ...

    async def settle(
        self, reservation: Reservation, actual: Demand, now: float, sent: float | None = None
    ) -> None:
        """What the call really used replaces its estimate (`sent`: when its first
        request was sent, if the worker said)."""
        ...

    async def observe(
        self, model: str, limits: Limits, report: RateLimitReport, now: float
    ) -> None:
        """Applies the API's report (less left than we think, a 429's pause)."""
        ...

    def snapshot(self, now: float) -> dict[str, tuple[Demand | None, Demand, float]]:
        """Per model seen: (used in the window, or None when the account is not in
        this process; limits in force; paused until)."""
        ...

    async def close(self) -> None: ...


class LocalLedger:
    """The account of one scheduler, in memory (SQLite: the only scheduler)."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._models: dict[str, ModelWindow] = {}

    def model(self, model: str, limits: Limits) -> ModelWindow:
        found = self._models.get(model)
        if found is None:
            found = self._models[model] = ModelWindow(model, limits, self._window)
        return found

    async def reserve(
        self, model: str, limits: Limits, demand: Demand, now: float
    ) -> tuple[Reservation | None, float, str]:
        account = self.model(model, limits)
        wait, why = account.wait_for(demand, now)
        if wait > 0:
            return None, wait, why
        # The call reaches the API a moment after it is admitted: its grant counts
        # that much longer, so the API's window never sees more than ours.
        # The call reaches the API some time between now and its end: its grant counts
        # until a window after it ends (settle), so the API's window never sees more
        # than ours, however long a worker takes to send it.
        return Reservation(model, demand, account.take(demand, now, math.inf)), 0.0, ""

    async def settle(
        self, reservation: Reservation, actual: Demand, now: float, sent: float | None = None
    ) -> None:
        if reservation.grant is not None:
            self._models[reservation.model].settle(reservation.grant, actual, now, sent)

    async def observe(
        self, model: str, limits: Limits, report: RateLimitReport, now: float
    ) -> None:
        self.model(model, limits).observe(report, now)

    def snapshot(self, now: float) -> dict[str, tuple[Demand | None, Demand, float]]:
        return {
            name: (
                account.used(now),
                Demand(*(account.limit(d) for d in Dimension)),
                account.paused_until,
            )
            for name, account in self._models.items()
        }

    async def close(self) -> None:
        self._models.clear()

"""Builds the model capacity limiter from the settings: one account per process on
SQLite, the store's shared account on PostgreSQL."""

from __future__ import annotations

from maestro.store import Store
from scheduler.breaker import BreakerPolicy
from scheduler.capacity import parse_limits
from scheduler.ledger import Ledger, LocalLedger
from scheduler.limiter import BreakerChange, CapacityLimiter
from scheduler.observe import observe_breaker
from scheduler.settings import SchedulerSettings
from scheduler.shared_ledger import SharedLedger


def build_limiter(store: Store, settings: SchedulerSettings) -> CapacityLimiter:
    window = settings.capacity_minute_seconds
    ledger: Ledger
    if store.shared:
        # Several schedulers may share the database: one account for all of them.
        ledger = SharedLedger(
            store,
            window=window,
            lease_seconds=settings.capacity_lease_seconds or window / 30,
            lease_fraction=settings.capacity_lease_fraction,
            skew=settings.capacity_skew_seconds,
        )
    else:
        ledger = LocalLedger(window)
    policy = BreakerPolicy(
        threshold=settings.breaker_threshold,
        window=settings.breaker_window_seconds,
        cool_down=settings.breaker_cool_down_seconds,
    )

    def on_breaker(change: BreakerChange) -> None:
        observe_breaker(change.model, change.state.value)

    return CapacityLimiter(
        ledger, parse_limits(settings.model_limits), policy, on_breaker=on_breaker
    )

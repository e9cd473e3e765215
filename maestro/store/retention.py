"""Retention: finished runs older than a set age are deleted, a batch at a time.

The scheduler calls `expire_runs` periodically (it is the store's writer); the store
provides the two operations it needs (`expired_run_ids`, `delete_run`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from maestro.core.errors import FailedPrecondition, NotFound
from maestro.store.base import Store

log = logging.getLogger(__name__)


async def expire_runs(
    store: Store, *, retention: timedelta, now: datetime | None = None, batch: int = 100
) -> int:
    """Deletes up to `batch` runs that finished more than `retention` ago.

    Returns:
        How many runs were deleted; call again while it returns `batch`.
    """
    cutoff = (now or datetime.now(UTC)) - retention
    deleted = 0
    for run_id in await store.expired_run_ids(cutoff, batch):
        try:
            await store.delete_run(run_id)
        except (NotFound, FailedPrecondition):
            continue  # deleted meanwhile (DeleteRun), or re-driven: not ours to delete
        deleted += 1
    if deleted:
        log.info("deleted %d runs that finished before %s", deleted, cutoff.isoformat())
    return deleted

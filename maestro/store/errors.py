"""The store's errors, apart so the SQL modules and the Store can both raise them."""

from __future__ import annotations

from maestro.core.errors import FailedPrecondition
from maestro.store.db import StoreUnavailable

__all__ = ["LeaseLost", "RunFinished", "SchemaMismatch", "StoreUnavailable"]


class RunFinished(FailedPrecondition):
    """A write about a run that already reached its final state was refused."""


class LeaseLost(FailedPrecondition):
    """This scheduler no longer owns the run (another took it over): it must stop
    driving it, and the store refuses its writes for it (fencing)."""


class SchemaMismatch(FailedPrecondition):
    """The database's schema is not the one this code reads and writes; the message
    says which command brings them together."""

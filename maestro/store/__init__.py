"""Run state: runs, steps, dispatches, events and artifact versions.

SQLite is the embedded default; PostgreSQL lets several schedulers share the work.
Schedulers write (each for the runs it holds a lease on); the gateway only reads, so it
keeps answering while schedulers restart. Importing this package never imports
SQLAlchemy: that is for migrations (maestro.store.migrate) and tests only.
"""

from maestro.store.base import Store, open_store, redact_url
from maestro.store.errors import LeaseLost, RunFinished, SchemaMismatch, StoreUnavailable
from maestro.store.models import (
    ACTIVE_RUN_STATES,
    FINISHED_RUN_STATES,
    NO_USAGE,
    TERMINAL_EVENTS,
    ArtifactRecord,
    CancelRequest,
    Claim,
    EventRecord,
    EventType,
    Lease,
    NewRun,
    RunHead,
    RunRecord,
    RunState,
    StepContextRecord,
    StepOutputRecord,
    StepRecord,
    StepResultRecord,
    StepState,
    Usage,
)
from maestro.store.sql_rounds import GateRecord, ReworkRequest

__all__ = [
    "ACTIVE_RUN_STATES",
    "FINISHED_RUN_STATES",
    "NO_USAGE",
    "TERMINAL_EVENTS",
    "ArtifactRecord",
    "CancelRequest",
    "Claim",
    "EventRecord",
    "EventType",
    "GateRecord",
    "Lease",
    "LeaseLost",
    "NewRun",
    "ReworkRequest",
    "RunFinished",
    "RunHead",
    "RunRecord",
    "RunState",
    "SchemaMismatch",
    "StepContextRecord",
    "StepOutputRecord",
    "StepRecord",
    "StepResultRecord",
    "StepState",
    "Store",
    "StoreUnavailable",
    "Usage",
    "open_store",
    "redact_url",
]

"""Run state: runs, steps, attempts, events and artifacts.

The scheduler is the single writer; the gateway only reads, so it keeps answering
while the scheduler restarts.
"""

from maestro.store.base import RunFinished, Store, open_store
from maestro.store.models import (
    TERMINAL_EVENTS,
    ArtifactRecord,
    EventRecord,
    EventType,
    NewRun,
    RunRecord,
    RunState,
    StepOutputRecord,
    StepRecord,
    StepResultRecord,
    StepState,
)

__all__ = [
    "TERMINAL_EVENTS",
    "ArtifactRecord",
    "EventRecord",
    "EventType",
    "NewRun",
    "RunFinished",
    "RunRecord",
    "RunState",
    "StepOutputRecord",
    "StepRecord",
    "StepResultRecord",
    "StepState",
    "Store",
    "open_store",
]

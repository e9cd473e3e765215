"""The scheduler's metrics, derived in one place from the events it commits.

The store hands over the events of every commit (`Store.on_events`); the meter counts
them off the commit path: runs and steps by the state they entered, and the time of
step attempts per persona. Counting the committed events (not the run loop's
intentions) keeps the metrics equal to what the API shows. Each event is counted by the
scheduler that wrote it: of a run taken over, the events written before are only read,
for when the attempts in flight began.

The engine's own state gives the gauges: steps in flight at the workers, steps waiting
for a slot (queue depth) and runs driven.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from maestro.core.errors import MaestroError
from maestro.store import Store
from maestro.store.models import EventRecord, EventType

log = logging.getLogger(__name__)

RUNS = Counter(
    "maestro_runs_total",
    "Runs that entered a state (PENDING when created, RUNNING when started or re-driven, "
    "QUEUED, SUCCEEDED, FAILED, CANCELLED), as committed by this scheduler.",
    ["state"],
)
STEPS = Counter(
    "maestro_steps_total",
    "Steps that entered a state: RUNNING (an attempt dispatched), QUEUED, RETRYING (an "
    "attempt failed and another is due), LOST (an attempt lost with its worker), "
    "SUCCEEDED, FAILED, BLOCKED, CANCELLED.",
    ["persona", "state"],
)
STEP_SECONDS = Histogram(
    "maestro_step_attempt_duration_seconds",
    "Wall time of a step attempt, from its dispatch to its outcome, by persona.",
    ["persona", "outcome"],
    buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
STEPS_IN_FLIGHT = Gauge(
    "maestro_steps_in_flight", "Step attempts this scheduler has at the workers now."
)
QUEUE_DEPTH = Gauge(
    "maestro_steps_queued", "Ready steps waiting for a free slot (admission queue depth)."
)
RUNS_DRIVEN = Gauge("maestro_runs_driven", "Runs this scheduler is driving now.")
BREAKER_STATE = Gauge(
    "maestro_model_breaker_state",
    "A model's circuit breaker as this scheduler sees it: 0 closed, 1 half-open, 2 open.",
    ["model"],
)
BREAKER_CHANGES = Counter(
    "maestro_model_breaker_changes_total",
    "A model's circuit breaker opened or closed (scheduler/breaker.py).",
    ["model", "state"],
)
CAPACITY_WAITING = Gauge(
    "maestro_capacity_waiting_steps",
    "Steps whose model call waits for its model's rate limit or breaker.",
)
_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def observe_breaker(model: str, state: str) -> None:
    """A breaker changed state (called by the limiter)."""
    BREAKER_STATE.labels(model).set(_BREAKER_VALUES[state])
    BREAKER_CHANGES.labels(model, state).inc()


def observe_capacity(waiting: object) -> None:
    """Points the capacity gauge at the limiter's live number (read at scrape time)."""
    CAPACITY_WAITING.set_function(waiting)  # type: ignore[arg-type]


_RUN_STATES = {
    EventType.RUN_CREATED: "PENDING",
    EventType.RUN_STARTED: "RUNNING",
    EventType.RUN_QUEUED: "QUEUED",
    EventType.RUN_SUCCEEDED: "SUCCEEDED",
    EventType.RUN_FAILED: "FAILED",
    EventType.RUN_CANCELLED: "CANCELLED",
}
_STEP_STATES = {
    EventType.STEP_STARTED: "RUNNING",
    EventType.STEP_QUEUED: "QUEUED",
    EventType.STEP_RETRY_SCHEDULED: "RETRYING",
    EventType.ATTEMPT_LOST: "LOST",
    EventType.STEP_SUCCEEDED: "SUCCEEDED",
    EventType.STEP_FAILED: "FAILED",
    EventType.STEP_BLOCKED: "BLOCKED",
    EventType.STEP_CANCELLED: "CANCELLED",
}
# Events that end an attempt, and the outcome its duration is filed under.
_ATTEMPT_ENDS = {
    EventType.STEP_SUCCEEDED: "succeeded",
    EventType.STEP_FAILED: "failed",
    EventType.STEP_RETRY_SCHEDULED: "failed",
    EventType.ATTEMPT_LOST: "lost",
}
_PAGE = 500


@dataclass
class _Run:
    """What the meter knows of one run."""

    personas: dict[str, str]
    seen: int = 0
    """The last sequence folded in (counted, or read as history)."""
    finished: bool = False
    started: dict[tuple[str, str], datetime] = field(default_factory=dict)


def observe_engine(in_flight: object, waiting: object, driven: object) -> None:
    """Points the gauges at the engine's live numbers (callables read at scrape time)."""
    STEPS_IN_FLIGHT.set_function(in_flight)  # type: ignore[arg-type]
    QUEUE_DEPTH.set_function(waiting)  # type: ignore[arg-type]
    RUNS_DRIVEN.set_function(driven)  # type: ignore[arg-type]


class EventMeter:
    """Counts the events this scheduler commits. `take` is the store's event listener."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: deque[EventRecord] = deque()
        self._runs: dict[str, _Run] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def take(self, events: list[EventRecord]) -> None:
        """Takes the events of a commit (called after each one, in commit order)."""
        self._pending.extend(events)
        self._ready.set()

    def start(self) -> None:
        """Starts counting in the background."""
        self._task = asyncio.create_task(self._count_forever(), name="event-meter")

    async def close(self) -> None:
        """Counts what is pending, then stops."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self.count_pending()

    async def _count_forever(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            try:
                await self.count_pending()
            except MaestroError as err:
                # The store is away; the events stay pending and are counted once it is back.
                log.warning("metrics: could not read a run's earlier events: %s", err.message)
                await asyncio.sleep(1.0)
                self._ready.set()

    async def count_pending(self) -> None:
        """Counts every event taken so far, in commit order."""
        while self._pending:
            event = self._pending[0]
            run = self._runs.get(event.run_id)
            if run is None:
                run = await self._first_sight(event.run_id)
            if event.sequence > run.seen + 1:
                # Events another scheduler wrote (before a takeover): not ours to count,
                # but they say when the attempts they started began.
                for earlier in await self._read(event.run_id, run.seen, event.sequence - 1):
                    self._fold(run, earlier, count=False)
            self._fold(run, event, count=True)
            run.seen = event.sequence
            self._pending.popleft()
            if run.finished:
                del self._runs[event.run_id]

    async def _first_sight(self, run_id: str) -> _Run:
        record = await self._store.get_run(run_id)
        # A run deleted since is still counted; its steps' personas are unknown then.
        personas = {} if record is None else {s.step_id: s.persona or s.kind for s in record.steps}
        run = self._runs[run_id] = _Run(personas=personas)
        return run

    async def _read(self, run_id: str, after: int, upto: int) -> list[EventRecord]:
        events: list[EventRecord] = []
        while after < upto:
            page = await self._store.events_after(run_id, after, _PAGE)
            if not page:
                break
            events += [e for e in page if e.sequence <= upto]
            after = page[-1].sequence
        return events

    def _fold(self, run: _Run, event: EventRecord, *, count: bool) -> None:
        kind = event.type
        persona = run.personas.get(event.step_id, "") or "unknown"
        attempt = event.attributes.get("attempt", "")
        if kind == EventType.STEP_STARTED:
            run.started[(event.step_id, attempt)] = event.time
        elif kind in _ATTEMPT_ENDS:
            began = run.started.pop((event.step_id, attempt), None)
            if count and began is not None:
                seconds = max(0.0, (event.time - began).total_seconds())
                STEP_SECONDS.labels(persona, _ATTEMPT_ENDS[kind]).observe(seconds)
        if kind in (EventType.RUN_SUCCEEDED, EventType.RUN_FAILED, EventType.RUN_CANCELLED):
            run.finished = True
        if not count:
            return
        if kind in _RUN_STATES:
            RUNS.labels(_RUN_STATES[kind]).inc()
        elif kind in _STEP_STATES:
            STEPS.labels(persona, _STEP_STATES[kind]).inc()

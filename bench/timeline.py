"""Where a Maestro run's time over its ideal goes, from its events' own timestamps.

Each step's time splits in two: its *start lag*, from the moment it could have started
(its dependencies succeeded and, under the in-flight cap, a slot was free) to its
STEP_STARTED, which covers noticing it is ready, admission and the transaction that
starts it; and its *overhead in the step*, from STEP_STARTED to STEP_SUCCEEDED minus
the sleep it asked for, which covers the call to the worker, the worker's work around
the sleep, the answer and the transaction that records it. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.workloads import Workload

RUN_CREATED, STEP_STARTED, STEP_SUCCEEDED = "RUN_CREATED", "STEP_STARTED", "STEP_SUCCEEDED"


@dataclass(frozen=True)
class Stamp:
    """One event of a run: its type name, step and server time (POSIX seconds)."""

    type: str
    step_id: str
    time: float


@dataclass
class Timeline:
    """Seconds, per step (in the workload's order) and for the run's two ends."""

    start_lags: list[float] = field(default_factory=list)
    in_step: list[float] = field(default_factory=list)
    head: float = 0.0
    """RUN_CREATED to the first STEP_STARTED."""
    tail: float = 0.0
    """The last STEP_SUCCEEDED to the run's last event (its end)."""


def timeline(workload: Workload, stamps: Sequence[Stamp]) -> Timeline:
    """The run's timeline; `stamps` are its events in order, ending with the terminal one.

    Raises:
        ValueError: a step did not both start and succeed once (the run failed, or
            retried: its timeline would not say what the bench measures).
    """
    created = next(s.time for s in stamps if s.type == RUN_CREATED)
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    for stamp in stamps:
        if stamp.type in (STEP_STARTED, STEP_SUCCEEDED):
            seen = started if stamp.type == STEP_STARTED else ended
            if stamp.step_id in seen:
                raise ValueError(f"step {stamp.step_id} has two {stamp.type} events")
            seen[stamp.step_id] = stamp.time
    missing = [s.id for s in workload.steps if s.id not in started or s.id not in ended]
    if missing:
        raise ValueError(f"steps {missing[:3]} did not start and succeed")
    # Under the cap, the n-th step to start (0-based) waits for the (n - cap)-th end.
    ends = sorted(ended.values())
    order = sorted(started, key=started.__getitem__)
    slot_free = {
        step_id: ends[n - workload.in_flight] if n >= workload.in_flight else created
        for n, step_id in enumerate(order)
    }
    result = Timeline(
        head=min(started.values()) - created, tail=stamps[-1].time - max(ended.values())
    )
    for step in workload.steps:
        ready = max((ended[d] for d in step.depends_on), default=created)
        result.start_lags.append(started[step.id] - max(ready, slot_free[step.id]))
        result.in_step.append(ended[step.id] - started[step.id] - step.sleep_ms / 1000)
    return result

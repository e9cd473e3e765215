"""The scheduler's run and step metrics come from the events each commit hands over.

Each event is counted by the scheduler that wrote it: here one store stands for two
schedulers, the meter listening only from the takeover on.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from maestro.store import NewRun, RunState, StepResultRecord, Store
from scheduler.observe import EventMeter

PERSONA = "backend_developer"


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _figures() -> tuple[float, ...]:
    return (
        _value("maestro_steps_total", persona=PERSONA, state="RUNNING"),
        _value("maestro_steps_total", persona=PERSONA, state="SUCCEEDED"),
        _value("maestro_step_attempt_duration_seconds_count", persona=PERSONA, outcome="succeeded"),
        _value("maestro_runs_total", state="SUCCEEDED"),
    )


async def test_a_taken_over_run_counts_only_the_new_owners_events(store: Store) -> None:
    new = NewRun(
        run_id="meter1",
        workflow_name="w",
        spec_json="{}",
        requirement="r",
        provider="offline",
        request_id="",
        steps=(("a", PERSONA, "persona", ()), ("b", PERSONA, "persona", ("a",))),
    )
    first = (await store.create_run(new, owner="scheduler-a")).lease
    assert first is not None
    await store.start_run(first)
    await store.start_dispatch(first, "a", "offline")  # a's attempt began under the old owner
    await store.release_leases("scheduler-a", ["meter1"])

    meter = EventMeter(store)
    store.on_events(meter.take)
    before = _figures()
    (claim,) = await store.claim_runs("scheduler-b", limit=1)
    lease = claim.lease
    result = StepResultRecord(summary="done", files=(), provider="offline", model="offline")
    assert await store.complete_step(lease, "a", 1, 1, result)
    attempt, dispatch = await store.start_dispatch(lease, "b", "offline")
    assert await store.complete_step(lease, "b", attempt, dispatch, result)
    await store.finish_run(lease, RunState.SUCCEEDED, "")
    await meter.count_pending()

    running, succeeded, timed, runs = (a - b for a, b in zip(_figures(), before, strict=True))
    assert running == 1  # b's dispatch; a's was the old owner's
    assert succeeded == 2
    # a's attempt was timed from its STEP_STARTED, read back from the old owner's events.
    assert timed == 2
    assert runs == 1

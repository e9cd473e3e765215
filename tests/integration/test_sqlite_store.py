"""The SQLite store on a real file: atomic state changes with dense events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from maestro.core.errors import AlreadyExists, FailedPrecondition, Internal
from maestro.store import (
    EventType,
    NewRun,
    RunFinished,
    RunState,
    StepResultRecord,
    StepState,
    Store,
    open_store,
)


def _new_run(run_id: str, request_id: str = "") -> NewRun:
    return NewRun(
        run_id=run_id,
        workflow_name="w",
        spec_json="{}",
        requirement="req",
        provider="offline",
        request_id=request_id,
        steps=(("a", "backend_developer", ()), ("b", "qa_engineer", ("a",))),
    )


def _result(*files: tuple[str, bytes]) -> StepResultRecord:
    return StepResultRecord(
        summary="done",
        files=files,
        provider="offline",
        model="offline",
        input_tokens=3,
        output_tokens=4,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite:///{tmp_path / 'maestro.db'}")
    yield store
    await store.close()


async def test_concurrent_writers_keep_event_sequences_dense(store: Store) -> None:
    await store.create_run(_new_run("r1"))
    await store.start_run("r1")
    attempt = await store.start_attempt("r1", "a", "offline")
    await asyncio.gather(
        *(store.record_progress("r1", "a", attempt, f"note {i}", "offline") for i in range(50))
    )
    events = await store.events_after("r1", 0)
    assert [e.sequence for e in events] == list(range(1, 54))
    assert {e.message for e in events if e.type is EventType.STEP_PROGRESS} == {
        f"note {i}" for i in range(50)
    }


async def test_a_result_is_recorded_once_even_when_delivered_twice(store: Store) -> None:
    await store.create_run(_new_run("r1"))
    attempt = await store.start_attempt("r1", "a", "offline")
    assert await store.complete_step("r1", "a", attempt, _result(("x.py", b"print(1)")))
    assert not await store.complete_step("r1", "a", attempt, _result(("y.py", b"")))

    artifacts = await store.list_artifacts("r1")
    assert [(a.path, a.step_id, a.size_bytes) for a in artifacts] == [("x.py", "a", 8)]
    full = await store.get_artifact("r1", "x.py")
    assert full is not None and full.content == b"print(1)"
    events = await store.events_after("r1", 0)
    assert [e.type for e in events].count(EventType.STEP_SUCCEEDED) == 1
    outputs = await store.step_outputs("r1", ["b", "a"])
    assert [(o.step_id, o.files) for o in outputs] == [("a", (("x.py", b"print(1)"),))]


async def test_failure_retry_block_and_finish(store: Store) -> None:
    await store.create_run(_new_run("r1"))
    first = await store.start_attempt("r1", "a", "offline")
    await store.fail_attempt("r1", "a", first, "overloaded", retry_in=0.5)
    second = await store.start_attempt("r1", "a", "offline")
    assert second == first + 1
    await store.fail_attempt("r1", "a", second, "overloaded again", retry_in=None, block=["b"])
    await store.finish_run("r1", RunState.FAILED, "step 'a' failed: overloaded again")

    run = await store.get_run("r1")
    assert run is not None
    assert run.state is RunState.FAILED
    assert [(s.state, s.attempts) for s in run.steps] == [
        (StepState.FAILED, 2),
        (StepState.BLOCKED, 0),
    ]
    types = [e.type for e in await store.events_after("r1", 0)]
    assert types[-4:] == [
        EventType.STEP_STARTED,
        EventType.STEP_FAILED,
        EventType.STEP_BLOCKED,
        EventType.RUN_FAILED,
    ]
    assert EventType.STEP_RETRY_SCHEDULED in types
    with pytest.raises(FailedPrecondition):
        await store.finish_run("r1", RunState.CANCELLED, "")


async def test_cancel_ends_unfinished_steps_and_restart_requeues_in_flight_ones(
    store: Store,
) -> None:
    await store.create_run(_new_run("r1"))
    await store.start_run("r1")
    await store.start_attempt("r1", "a", "offline")
    assert await store.unfinished_run_ids() == ["r1"]
    assert await store.requeue_interrupted_steps("r1") == ["a"]
    run = await store.get_run("r1")
    assert run is not None and run.steps[0].state is StepState.PENDING
    # The next attempt gets a new number: the lost one is never reused.
    assert await store.start_attempt("r1", "a", "offline") == 2

    await store.finish_run("r1", RunState.CANCELLED, "cancelled by request")
    run = await store.get_run("r1")
    assert run is not None
    assert {s.state for s in run.steps} == {StepState.CANCELLED}
    assert await store.run_finished("r1")
    assert await store.unfinished_run_ids() == []


async def test_request_ids_are_unique_and_runs_page_newest_first(store: Store) -> None:
    await store.create_run(_new_run("r1", request_id="q"))
    with pytest.raises(AlreadyExists):
        await store.create_run(_new_run("r2", request_id="q"))
    for i in range(2, 6):
        await store.create_run(_new_run(f"r{i}"))
    first = await store.list_runs(2)
    assert [r.run_id for r in first] == ["r5", "r4"]
    rest = await store.list_runs(10, after=(first[-1].create_time, first[-1].run_id))
    assert [r.run_id for r in rest] == ["r3", "r2", "r1"]


async def test_nothing_about_a_run_is_recorded_after_it_finished(store: Store) -> None:
    await store.create_run(_new_run("r1"))
    attempt = await store.start_attempt("r1", "a", "offline")
    await store.finish_run("r1", RunState.CANCELLED, "cancelled by request")
    terminal = (await store.events_after("r1", 0))[-1]

    with pytest.raises(RunFinished):
        await store.complete_step("r1", "a", attempt, _result(("x.py", b"")))
    with pytest.raises(RunFinished):
        await store.record_progress("r1", "a", attempt, "late note", "offline")
    with pytest.raises(RunFinished):
        await store.start_attempt("r1", "b", "offline")

    assert (await store.events_after("r1", 0))[-1] == terminal
    assert await store.list_artifacts("r1") == []


async def test_a_write_cancelled_at_any_point_leaves_the_store_usable(store: Store) -> None:
    await store.create_run(_new_run("r1"))
    # Cancel record_progress after 0, 1, 2, ... event-loop turns: whichever statement
    # was queued (BEGIN, the UPDATE, the INSERT, COMMIT), the next write must work.
    for turns in range(12):
        attempt = await store.start_attempt("r1", "a", "offline")
        write = asyncio.create_task(store.record_progress("r1", "a", attempt, "note", "offline"))
        for _ in range(turns):
            await asyncio.sleep(0)
        write.cancel()
        await asyncio.gather(write, return_exceptions=True)
        await store.fail_attempt("r1", "a", attempt, "cancelled", retry_in=0.0)
    events = await store.events_after("r1", 0)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


async def test_one_database_file_has_one_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'maestro.db'}"
    writer = await open_store(url, writer=True)
    try:
        with pytest.raises(FailedPrecondition, match="another scheduler"):
            await open_store(url, writer=True)
        reader = await open_store(url)  # readers (the gateway) are never locked out
        await reader.close()
    finally:
        await writer.close()
    again = await open_store(url, writer=True)  # released on close
    await again.close()


async def test_the_health_check_notices_a_connection_stuck_in_a_transaction(store: Store) -> None:
    await store.check()
    # Simulate the failure the cancellation fix prevents: a transaction left open.
    await store._conn._db.execute("BEGIN")  # type: ignore[attr-defined]
    with pytest.raises(Internal, match="stuck inside a transaction"):
        await store.check()

"""The store on real databases (SQLite and PostgreSQL): atomic state changes with dense
events, leases with fencing, durable timers, artifact versions."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from maestro.core.errors import AlreadyExists, FailedPrecondition, Internal, NotFound
from maestro.store import (
    EventType,
    Lease,
    LeaseLost,
    NewRun,
    RunFinished,
    RunHead,
    RunState,
    StepResultRecord,
    StepState,
    Store,
    Usage,
    open_store,
    sql_writes,
)
from maestro.store.db import Dialect, Tx
from maestro.store.sql_reads import to_datetime
from tests.support.databases import Templates, migrated_database

ME = "scheduler-a"


def _new_run(run_id: str, request_id: str = "") -> NewRun:
    return NewRun(
        run_id=run_id,
        workflow_name="w",
        spec_json="{}",
        requirement="req",
        provider="offline",
        request_id=request_id,
        created_by="alice",
        steps=(("a", "backend_developer", "persona", ()), ("b", "qa_engineer", "persona", ("a",))),
    )


THREE_IN_FOUR_OUT = Usage(3, 4)


def _result(*files: tuple[str, bytes], usage: Usage = THREE_IN_FOUR_OUT) -> StepResultRecord:
    return StepResultRecord(
        summary="done", files=files, provider="offline", model="offline", usage=usage
    )


async def _created(store: Store, run_id: str = "r1", request_id: str = "") -> Lease:
    lease = (await store.create_run(_new_run(run_id, request_id), owner=ME)).lease
    assert lease is not None
    return lease


async def test_a_created_run_s_record_is_the_one_read_back(store: Store) -> None:
    # The scheduler drives a new run from the record create_run returns, built
    # without reading the steps back; it must be exactly what a read gives.
    for owner in (ME, None):
        created = await store.create_run(_new_run(f"fresh-{owner}", f"q-{owner}"), owner=owner)
        assert created.record == await store.get_run(created.record.run_id)


async def test_a_run_s_head_reads_without_its_steps(store: Store) -> None:
    await _created(store)
    record = await store.get_run("r1")
    assert record is not None
    assert await store.run_head("r1") == RunHead(
        record.state, record.last_sequence, record.created_by
    )
    assert record.created_by == "alice" and record.last_sequence > 0
    assert await store.run_head("no-such-run") is None


async def test_every_step_column_reads_back_in_its_place(store: Store) -> None:
    # A run's steps are read as plain tuples in a fixed column order: every column gets
    # a value no other has, so a swap of two columns would show.
    await store.create_run(_new_run("columns"), owner=None)
    stored: dict[str, Any] = {
        "state": "RUNNING",
        "attempts": 3,
        "round": 2,
        "start_time": 1_000_001,
        "end_time": 2_000_002,
        "due_time": 3_000_003,
        "error": "E",
        "summary": "S",
        "provider": "PV",
        "model": "M",
        "result_json": "RJ",
        "feedback": "FB",
        "attempts_before_round": 7,
        "input_tokens": 11,
        "output_tokens": 12,
        "cache_read_tokens": 13,
        "cache_write_tokens": 14,
        "cost_usd": 1.5,
    }

    def update(tx: Tx) -> None:
        columns = ", ".join(f"{name} = ?" for name in stored)
        tx.execute(
            f"UPDATE steps SET {columns} WHERE run_id = 'columns' AND step_id = 'b'",
            tuple(stored.values()),
        )

    await store.db.write(update)
    run = await store.get_run("columns")
    assert run is not None
    step = run.steps[1]
    assert (step.step_id, step.persona, step.kind, step.depends_on) == (
        "b",
        "qa_engineer",
        "persona",
        ("a",),
    )
    usage = step.usage
    assert [
        step.state.value,
        step.attempts,
        step.round,
        step.start_time,
        step.end_time,
        step.due_time,
        step.error,
        step.summary,
        step.provider,
        step.model,
        step.result_json,
        step.feedback,
        step.attempts_before_round,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.cost_usd,
    ] == [to_datetime(value) if name.endswith("_time") else value for name, value in stored.items()]


async def test_concurrent_writers_keep_event_sequences_dense(store: Store) -> None:
    lease = await _created(store)
    await store.start_run(lease)
    attempt, dispatch = await store.start_dispatch(lease, "a", "offline")
    await asyncio.gather(
        *(
            store.record_progress(lease, "a", attempt, dispatch, [(f"note {i}", "offline")], None)
            for i in range(50)
        )
    )
    events = await store.events_after("r1", 0)
    assert [e.sequence for e in events] == list(range(1, 54))
    assert {e.message for e in events if e.type is EventType.STEP_PROGRESS} == {
        f"note {i}" for i in range(50)
    }
    run = await store.get_run("r1")
    assert run is not None and run.last_sequence == 53


async def test_a_result_is_recorded_once_even_when_delivered_twice(store: Store) -> None:
    lease = await _created(store)
    attempt, dispatch = await store.start_dispatch(lease, "a", "offline")
    assert await store.complete_step(lease, "a", attempt, dispatch, _result(("x.py", b"print(1)")))
    assert not await store.complete_step(lease, "a", attempt, dispatch, _result(("y.py", b"")))

    artifacts = await store.list_artifacts("r1")
    assert [(a.path, a.step_id, a.size_bytes, a.version) for a in artifacts] == [
        ("x.py", "a", 8, 1)
    ]
    full = await store.get_artifact("r1", "x.py")
    assert full is not None and full.content == b"print(1)"
    events = await store.events_after("r1", 0)
    assert [e.type for e in events].count(EventType.STEP_SUCCEEDED) == 1
    context = await store.step_context("r1", ["b", "a"], 1000)
    assert [(c.step_id, c.files, c.omitted_paths) for c in context] == [
        ("a", (("x.py", b"print(1)"),), ())
    ]
    # A budget too small for the file names it instead of dropping it silently.
    tight = await store.step_context("r1", ["a"], 4)
    assert [(c.files, c.omitted_paths) for c in tight] == [((), ("x.py",))]


async def test_every_write_of_a_path_is_a_version_and_reads_give_the_latest(store: Store) -> None:
    lease = await _created(store)
    attempt, dispatch = await store.start_dispatch(lease, "a", "offline")
    await store.complete_step(lease, "a", attempt, dispatch, _result(("x.py", b"one")))
    attempt, dispatch = await store.start_dispatch(lease, "b", "offline")
    await store.complete_step(lease, "b", attempt, dispatch, _result(("x.py", b"two!")))

    latest = await store.get_artifact("r1", "x.py")
    assert latest is not None and (latest.content, latest.version, latest.step_id) == (
        b"two!",
        2,
        "b",
    )
    first = await store.get_artifact("r1", "x.py", version=1)
    assert first is not None and first.content == b"one"
    versions = await store.list_artifacts("r1", all_versions=True)
    assert [(a.version, a.step_id) for a in versions] == [(1, "a"), (2, "b")]
    assert await store.owned_paths("r1") == {"x.py": "b"}
    recorded = [
        e for e in await store.events_after("r1", 0) if e.type is EventType.ARTIFACT_RECORDED
    ]
    assert recorded[-1].attributes["replaces_step"] == "a"


async def test_failure_retry_block_and_finish(store: Store) -> None:
    lease = await _created(store)
    first, d1 = await store.start_dispatch(lease, "a", "offline")
    later = await store.fail_attempt(
        lease, "a", first, d1, "overloaded", usage=Usage(10, 0), retry_in=30
    )
    assert later is not None and abs(later - (time.time() + 30)) < 1
    run = await store.get_run("r1")
    assert run is not None
    step = run.steps[0]
    # The retry is a durable timer: the due time is in the store, not in a sleep.
    assert step.state is StepState.PENDING
    assert step.due_time is not None and abs(step.due_time.timestamp() - later) < 0.01
    second, d2 = await store.start_dispatch(lease, "a", "offline")
    assert (second, d2) == (first + 1, 1)
    await store.fail_attempt(
        lease, "a", second, d2, "overloaded again", usage=Usage(5, 1), retry_in=None, block=["b"]
    )
    await store.finish_run(lease, RunState.FAILED, "step 'a' failed: overloaded again")

    run = await store.get_run("r1")
    assert run is not None
    assert run.state is RunState.FAILED
    assert [(s.state, s.attempts) for s in run.steps] == [
        (StepState.FAILED, 2),
        (StepState.BLOCKED, 0),
    ]
    # Usage of failed attempts counts.
    assert run.usage == Usage(15, 1)
    types = [e.type for e in await store.events_after("r1", 0)]
    assert types[-4:] == [
        EventType.STEP_STARTED,
        EventType.STEP_FAILED,
        EventType.STEP_BLOCKED,
        EventType.RUN_FAILED,
    ]
    assert EventType.STEP_RETRY_SCHEDULED in types


async def test_a_lost_dispatch_is_sent_again_under_the_same_attempt(store: Store) -> None:
    lease = await _created(store)
    attempt, dispatch = await store.start_dispatch(lease, "a", "offline")
    await store.record_progress(lease, "a", attempt, dispatch, [], Usage(7, 2))
    await store.lose_dispatch(lease, "a", attempt, dispatch, "worker gone", usage=None, retry_in=0)
    assert await store.start_dispatch(lease, "a", "offline") == (1, 2)
    run = await store.get_run("r1")
    assert run is not None
    assert run.steps[0].attempts == 1
    # What the lost dispatch reported before it was lost is counted.
    assert run.steps[0].usage == Usage(7, 2)
    lost = [e for e in await store.events_after("r1", 0) if e.type is EventType.ATTEMPT_LOST]
    assert lost[0].attributes["reason"] == "worker gone"
    assert lost[0].attributes["input_tokens"] == "7"


async def test_a_new_owner_recovers_dispatches_left_running(store: Store) -> None:
    lease = await _created(store)
    await store.start_run(lease)
    await store.start_dispatch(lease, "a", "offline")
    # Another scheduler takes it over (everything: as on SQLite after a restart).
    claims = await store.claim_runs("scheduler-b", limit=10, everything=True)
    assert [c.lease.run_id for c in claims] == ["r1"]
    assert claims[0].taken_from == ME
    new = claims[0].lease
    assert new.token == lease.token + 1
    assert await store.recover_run(new, "scheduler-a stopped") == ["a"]
    assert await store.start_dispatch(new, "a", "offline") == (1, 2)


async def test_a_scheduler_that_lost_its_lease_can_write_nothing(store: Store) -> None:
    lease = await _created(store, "r1")
    attempt, dispatch = await store.start_dispatch(lease, "a", "offline")
    # The lease expires (a paused scheduler) and another scheduler claims the run.
    assert await store.claim_runs("scheduler-b", limit=10, lease_seconds=5) == []
    expired = await store.renew_leases(ME, lease_seconds=-1)
    assert expired == [("r1", False)]
    claims = await store.claim_runs("scheduler-b", limit=10, lease_seconds=5)
    assert [c.lease.owner for c in claims] == ["scheduler-b"]
    before = await store.events_after("r1", 0)

    with pytest.raises(LeaseLost):
        await store.complete_step(lease, "a", attempt, dispatch, _result(("x.py", b"")))
    with pytest.raises(LeaseLost):
        await store.record_progress(lease, "a", attempt, dispatch, [("late", "x")], None)
    with pytest.raises(LeaseLost):
        await store.finish_run(lease, RunState.SUCCEEDED, "")
    assert await store.renew_leases(ME) == []  # it holds nothing now
    assert await store.events_after("r1", 0) == before
    assert await store.list_artifacts("r1") == []


async def test_released_runs_are_claimed_at_once_and_oldest_first(store: Store) -> None:
    for i in range(3):
        await _created(store, f"r{i}")
    assert await store.release_leases(ME, ["r0", "r1", "r2"]) == 3
    claims = await store.claim_runs("scheduler-b", limit=2)
    assert [c.lease.run_id for c in claims] == ["r0", "r1"]
    unowned = await store.create_run(_new_run("r9"), owner=None)
    assert unowned.lease is None
    claims = await store.claim_runs("scheduler-c", limit=10)
    assert [c.lease.run_id for c in claims] == ["r2", "r9"]


async def test_a_cancel_request_is_recorded_for_whoever_drives_the_run(store: Store) -> None:
    lease = await _created(store)
    request = await store.request_cancel("r1")
    assert (request.state, request.owner, request.lease_live) == (RunState.PENDING, ME, True)
    assert await store.renew_leases(ME) == [("r1", True)]
    await store.finish_run(lease, RunState.CANCELLED, "cancelled by request")
    run = await store.get_run("r1")
    assert run is not None and run.owner is None
    assert {s.state for s in run.steps} == {StepState.CANCELLED}
    assert await store.unfinished_run_ids() == []
    with pytest.raises(NotFound):
        await store.request_cancel("nope")


async def test_request_ids_are_unique_and_runs_page_newest_first(store: Store) -> None:
    await _created(store, "r1", request_id="q")
    with pytest.raises(AlreadyExists):
        await store.create_run(_new_run("r2", request_id="q"), owner=ME)
    for i in range(2, 6):
        await _created(store, f"r{i}")
    first = await store.list_runs(2)
    assert [r.run_id for r in first] == ["r5", "r4"]
    rest = await store.list_runs(10, after=(first[-1].create_time, first[-1].run_id))
    assert [r.run_id for r in rest] == ["r3", "r2", "r1"]
    assert [r.run_id for r in await store.list_runs(10, created_by="bob")] == []
    assert len(await store.list_runs(10, created_by="alice")) == 5


async def test_nothing_about_a_run_is_recorded_after_it_finished(store: Store) -> None:
    lease = await _created(store)
    attempt, dispatch = await store.start_dispatch(lease, "a", "offline")
    await store.finish_run(lease, RunState.CANCELLED, "cancelled by request")
    terminal = (await store.events_after("r1", 0))[-1]
    # Finishing gives the lease up: the old lease is refused whatever it tries.
    with pytest.raises((RunFinished, LeaseLost)):
        await store.complete_step(lease, "a", attempt, dispatch, _result(("x.py", b"")))
    with pytest.raises((RunFinished, LeaseLost)):
        await store.start_dispatch(lease, "b", "offline")
    assert (await store.events_after("r1", 0))[-1] == terminal
    assert await store.list_artifacts("r1") == []
    await store.delete_run("r1")
    assert await store.get_run("r1") is None


@contextlib.asynccontextmanager
async def _one_group(store: Store) -> AsyncIterator[None]:
    """Holds the writer thread until the block ends, so that the writes started inside
    it wait in its queue and are taken as one group."""
    release = threading.Event()
    held = asyncio.ensure_future(store.db.write(lambda tx: release.wait(10)))
    await asyncio.sleep(0.05)  # the writer is inside the holding job now
    try:
        yield
        await asyncio.sleep(0)  # the writes started in the block are queued
    finally:
        release.set()
        await held


async def test_a_failing_transaction_in_a_group_does_not_undo_the_others(store: Store) -> None:
    lease = await _created(store)
    attempt, dispatch = await store.start_dispatch(lease, "a", "offline")
    # One group: failing ones first, in the middle and last; every other one must
    # commit, each failing one must fail alone.
    failing = {0, 7, 8, 21}
    async with _one_group(store):
        writes = [
            asyncio.ensure_future(
                store.start_dispatch(lease, "no-such-step", "offline")
                if i in failing
                else store.record_progress(lease, "a", attempt, dispatch, [(f"n{i}", "x")], None)
            )
            for i in range(22)
        ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(results[i], NotFound) for i in failing)
    assert all(r is True for i, r in enumerate(results) if i not in failing)
    events = await store.events_after("r1", 0)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    notes = [e.message for e in events if e.type is EventType.STEP_PROGRESS]
    assert sorted(notes) == sorted(f"n{i}" for i in range(22) if i not in failing)


async def test_no_transaction_of_a_group_runs_more_than_twice(store: Store) -> None:
    # A failing transaction rolls its group back; the others run again, but however
    # many fail, none runs more than twice (not once per failure after it).
    runs = [0] * 60

    def job(tx: Any, index: int) -> int:
        runs[index] += 1
        tx.execute("SELECT 1")
        if index % 2:
            raise NotFound(f"job {index} fails")
        return index

    async with _one_group(store):
        writes = [asyncio.ensure_future(store.db.write(job, i)) for i in range(60)]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert [r for r in results if not isinstance(r, NotFound)] == list(range(0, 60, 2))
    assert max(runs) <= 2
    assert all(runs[i] == 1 for i in range(1, 60, 2))  # a failing one ran once


async def test_a_failed_transaction_hears_its_error_after_the_ones_before_it_committed(
    store: Store,
) -> None:
    # Two identical CreateRuns in one group: the second finds the first's request id
    # and fails; when it hears so, the first run must be there to be read back (the
    # scheduler answers the retry with it).
    async with _one_group(store):
        first = asyncio.ensure_future(store.create_run(_new_run("one", "same"), owner=None))
        second = asyncio.ensure_future(store.create_run(_new_run("two", "same"), owner=None))
    with pytest.raises(AlreadyExists):
        await second
    found = await store.find_run_by_request_id("same")
    assert found is not None and found.run_id == "one"
    assert (await first).record.run_id == "one"


async def test_two_schedulers_recording_one_request_at_once_make_one_run(
    database_templates: Templates, tmp_path: Path
) -> None:
    # PostgreSQL only (a SQLite file has one writing scheduler): the second scheduler's
    # insert meets the first's row before it is committed and waits for it; it must
    # then say the request exists, not fail on the unique index.
    postgres = contextlib.contextmanager(migrated_database)
    with postgres(database_templates, "postgres", tmp_path) as url:
        first_scheduler = await open_store(url, writer=True)
        second_scheduler = await open_store(url, writer=True)
        release = threading.Event()

        def record_and_hold(tx: Tx) -> str:
            created = sql_writes.create_run(tx, _new_run("one", "same"), None, 15.0)
            release.wait(10)  # the transaction stays open, its row inserted
            return created.record.run_id

        try:
            first = asyncio.ensure_future(first_scheduler.db.write(record_and_hold))
            await asyncio.sleep(0.1)
            second = asyncio.ensure_future(
                second_scheduler.create_run(_new_run("two", "same"), owner=None)
            )
            await asyncio.sleep(0.2)
            assert not second.done()  # waiting for the first transaction
            release.set()
            assert await first == "one"
            with pytest.raises(AlreadyExists):
                await second
            found = await second_scheduler.find_run_by_request_id("same")
            assert found is not None and found.run_id == "one"
        finally:
            release.set()
            await first_scheduler.close()
            await second_scheduler.close()


async def test_a_transaction_that_ends_its_own_transaction_fails_alone(store: Store) -> None:
    # SQLite ends a transaction by itself on some errors (a full disk); the writer's own
    # ROLLBACK then fails. The others of the group must still commit.
    def note(tx: Any, value: str) -> str:
        tx.execute(
            "INSERT INTO schedulers (scheduler_id, host, pid, start_time, heartbeat_time)"
            " VALUES (?, 'h', 1, 0, 0)",
            (value,),
        )
        return value

    def ends_it(tx: Any) -> None:
        tx.execute("ROLLBACK")
        raise NotFound("gone")

    async with _one_group(store):
        writes = [
            asyncio.ensure_future(store.db.write(note, "before")),
            asyncio.ensure_future(store.db.write(ends_it)),
            asyncio.ensure_future(store.db.write(note, "after")),
        ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert results[0] == "before" and results[2] == "after"
    assert isinstance(results[1], NotFound)
    stored = await store.db.read(lambda tx: tx.all("SELECT scheduler_id FROM schedulers"))
    assert sorted(row["scheduler_id"] for row in stored) == ["after", "before"]


async def test_a_write_that_fails_after_its_transaction_stopped_reading_fails_that_one(
    store: Store,
) -> None:
    # On PostgreSQL a write is sent without waiting for the server, so its error comes
    # back later: it must still be the error of the transaction that wrote it, and the
    # others of the group must commit and read their own counts.
    def note(tx: Tx, value: str) -> int:
        return tx.changed(
            "INSERT INTO schedulers (scheduler_id, host, pid, start_time, heartbeat_time)"
            " VALUES (?, 'h', 1, 0, 0)",
            (value,),
        )

    runs = [0, 0, 0]

    def counted(index: int, value: str) -> Callable[[Tx], int]:
        def write(tx: Tx) -> int:
            runs[index] += 1
            return note(tx, value)

        return write

    def duplicate_then_done(tx: Tx) -> str:
        runs[1] += 1
        tx.execute(
            "INSERT INTO schedulers (scheduler_id, host, pid, start_time, heartbeat_time)"
            " VALUES ('taken', 'h', 1, 0, 0)"
        )
        tx.execute("UPDATE schedulers SET pid = 2 WHERE scheduler_id = 'before'")
        return "returned without reading"

    assert await store.db.write(note, "taken") == 1
    async with _one_group(store):
        writes = [
            asyncio.ensure_future(store.db.write(counted(0, "before"))),
            asyncio.ensure_future(store.db.write(duplicate_then_done)),
            asyncio.ensure_future(store.db.write(counted(2, "after"))),
        ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], Internal) and "unique" in results[1].message.lower()
    if store.db.dialect is Dialect.POSTGRES:
        # Pipelined first, then carefully to find the failing one (the one after it
        # ran pipelined too unless the error came back before it started).
        assert runs[:2] == [3, 2] and runs[2] in (1, 2)
    else:
        assert runs == [2, 1, 1]
    stored = await store.db.read(lambda tx: tx.all("SELECT scheduler_id, pid FROM schedulers"))
    assert sorted((row["scheduler_id"], row["pid"]) for row in stored) == [
        ("after", 1),
        ("before", 1),
        ("taken", 1),
    ]


async def test_a_group_whose_commit_fails_fails_whole(store: Store) -> None:
    # A deferred constraint is checked by COMMIT itself: nothing of the group is
    # committed and each of its transactions hears the error. PostgreSQL's pipelined
    # pass cannot tell which transaction it was, and knows nothing was committed, so the
    # group runs once more carefully, where the COMMIT fails the same way.
    await store.db.write(
        lambda tx: tx.execute(
            "CREATE TABLE deferred_refs (id INTEGER PRIMARY KEY, ref INTEGER"
            " REFERENCES deferred_refs (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    )
    runs = [0, 0]

    def dangling(tx: Tx) -> None:
        runs[0] += 1
        tx.execute("INSERT INTO deferred_refs (id, ref) VALUES (1, 99)")

    def fine(tx: Tx) -> None:
        runs[1] += 1
        tx.execute("INSERT INTO deferred_refs (id, ref) VALUES (2, NULL)")

    async with _one_group(store):
        writes = [
            asyncio.ensure_future(store.db.write(dangling)),
            asyncio.ensure_future(store.db.write(fine)),
        ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(result, Internal) for result in results), results
    assert runs == ([2, 2] if store.db.dialect is Dialect.POSTGRES else [1, 1])
    assert await store.db.read(lambda tx: tx.all("SELECT id FROM deferred_refs")) == []


async def test_queries_sent_together_each_read_their_own_rows(store: Store) -> None:
    # On PostgreSQL's writer the queries go out before any is read and their results
    # come back together; each must still get its own rows, as of when it was sent.
    insert = (
        "INSERT INTO schedulers (scheduler_id, host, pid, start_time, heartbeat_time)"
        " VALUES (?, 'h', ?, 0, 0)"
    )

    def job(tx: Tx) -> tuple[Any, ...]:
        tx.execute(insert, ("a", 1))
        count_before = tx.query("SELECT COUNT(*) AS n FROM schedulers")
        pid_of_a = tx.query("SELECT pid FROM schedulers WHERE scheduler_id = ?", ("a",))
        tx.execute(insert, ("b", 2))
        nothing = tx.query("SELECT pid FROM schedulers WHERE scheduler_id = ?", ("none",))
        both = tx.query("SELECT scheduler_id FROM schedulers ORDER BY scheduler_id")
        return (
            [row["scheduler_id"] for row in both.all()],
            nothing.one(),
            pid_of_a.all()[0]["pid"],
            count_before.all()[0]["n"],
        )

    assert await store.db.write(job) == (["a", "b"], None, 1, 1)


async def test_a_transaction_of_hundreds_of_events_stores_them_all(store: Store) -> None:
    # Cancelling a run of 450 unfinished steps appends 451 events in one transaction
    # (PostgreSQL takes them 200 rows to an INSERT).
    steps = tuple((f"s{i}", "backend_developer", "persona", ()) for i in range(450))
    new = _new_run("big").model_copy(update={"steps": steps})
    lease = (await store.create_run(new, owner=ME)).lease
    assert lease is not None
    await store.finish_run(lease, RunState.CANCELLED, "cancelled by request")
    events = await store.events_after("big", 0, 1000)
    assert [e.sequence for e in events] == list(range(1, 453))  # RUN_CREATED first
    assert sum(e.type is EventType.STEP_CANCELLED for e in events) == 450
    assert events[-1].type is EventType.RUN_CANCELLED
    assert (await store.run_progress(["big"]))["big"] == (RunState.CANCELLED, 452)


async def test_a_cancelled_caller_does_not_cut_a_transaction_short(store: Store) -> None:
    lease = await _created(store)
    for turns in range(8):
        attempt, dispatch = await store.start_dispatch(lease, "a", "offline")
        write = asyncio.create_task(
            store.record_progress(lease, "a", attempt, dispatch, [("note", "x")], None)
        )
        for _ in range(turns):
            await asyncio.sleep(0)
        write.cancel()
        await asyncio.gather(write, return_exceptions=True)
        await store.fail_attempt(lease, "a", attempt, dispatch, "cancelled", usage=None, retry_in=0)
    events = await store.events_after("r1", 0)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


async def test_deleting_an_unfinished_run_is_refused(store: Store) -> None:
    await _created(store)
    with pytest.raises(FailedPrecondition, match="cancel it first"):
        await store.delete_run("r1")


async def test_after_a_statement_meets_an_outage_the_writer_connects_afresh(store: Store) -> None:
    # SQLite keeps a connection read-only after an I/O error mid-write, long after the
    # disk is back; the writer must not keep using it.
    import sqlite3

    import psycopg

    from maestro.store import StoreUnavailable

    seen: list[Any] = []  # the connections themselves: their ids could be reused

    def broken(tx: Any) -> None:
        seen.append(tx.cursor.connection)
        if isinstance(tx.cursor, sqlite3.Cursor):
            raise sqlite3.OperationalError("disk I/O error")
        raise psycopg.OperationalError("the connection is lost")

    def fine(tx: Any) -> None:
        seen.append(tx.cursor.connection)

    await store.db.write(fine)
    await store.db.write(fine)
    assert seen[0] is seen[1]  # one connection while all is well
    with pytest.raises(StoreUnavailable):
        await store.db.write(broken)
    await store.db.write(fine)
    assert seen[-1] is not seen[-2]  # the connection that met the outage is gone

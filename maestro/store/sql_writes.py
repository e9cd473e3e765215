"""The store's write transactions: plain functions of a Tx, run whole on a database thread.

Every change to a run goes through `_RunWriter`, which first locks the run's row and
checks the writer's lease (fencing: a scheduler that lost the run cannot write for it
again), then appends events with sequence numbers taken from the locked row, and last
stores the new last sequence and announces it. A state change and its events are one
transaction: committed before anyone can hear of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from maestro.core.errors import AlreadyExists, FailedPrecondition, Internal, NotFound
from maestro.paths import is_shared
from maestro.store.db import Dialect, Query, Row, Tx
from maestro.store.errors import LeaseLost, RunFinished
from maestro.store.models import (
    ACTIVE_RUN_STATES,
    FINISHED_STEP_STATES,
    RUN_TERMINAL_EVENT,
    CancelRequest,
    Claim,
    CreatedRun,
    DispatchState,
    EventRecord,
    EventType,
    Lease,
    NewRun,
    RunState,
    StepContextRecord,
    StepResultRecord,
    StepState,
    Usage,
)
from maestro.store.sql_reads import context_listing, created_run, step_context, to_datetime

ACTIVE = "(" + ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_RUN_STATES)) + ")"
STEP_UNFINISHED = (
    "(" + ", ".join(f"'{s.value}'" for s in sorted(set(StepState) - FINISHED_STEP_STATES)) + ")"
)


def append_event(
    tx: Tx,
    run_id: str,
    sequence: int,
    type_: EventType,
    message: str,
    step_id: str = "",
    attributes: dict[str, str] | None = None,
) -> None:
    _insert_events(tx, [_event(tx, run_id, sequence, type_, message, step_id, attributes)])


def _event(
    tx: Tx,
    run_id: str,
    sequence: int,
    type_: EventType,
    message: str,
    step_id: str,
    attributes: dict[str, str] | None,
) -> EventRecord:
    return EventRecord(
        run_id=run_id,
        sequence=sequence,
        type=type_,
        step_id=step_id,
        time=to_datetime(tx.now),
        message=message,
        attributes=attributes or {},
    )


_INSERT_EVENTS = "INSERT INTO events (run_id, sequence, type, step_id, time, message, attributes)"
# Rows per INSERT of events on PostgreSQL: 7 parameters each, well within its limit.
_EVENTS_PER_INSERT = 200


def _insert_events(tx: Tx, events: list[EventRecord]) -> None:
    """Stores a transaction's events (appended in sequence order).

    On PostgreSQL, where every statement is a round trip, in one multi-row INSERT per
    200 events; on SQLite in one executemany (one compiled statement, run per row in C).
    """
    rows = [
        (e.run_id, e.sequence, e.type.value, e.step_id, tx.now, e.message, json.dumps(e.attributes))
        for e in events
    ]
    if tx.dialect is Dialect.SQLITE:
        tx.many(_INSERT_EVENTS + " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    else:
        for start in range(0, len(rows), _EVENTS_PER_INSERT):
            chunk = rows[start : start + _EVENTS_PER_INSERT]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            tx.execute(f"{_INSERT_EVENTS} VALUES {values}", [v for row in chunk for v in row])
    tx.appended.extend(events)


class _RunWriter:
    """One transaction's writes for one run, under its lease.

    Its events are stored by `close` together, and the run's last sequence with its
    announcement in one more statement: a step's completion appends three or four
    events, and on PostgreSQL every statement is a round trip.
    """

    def __init__(
        self, tx: Tx, lease: Lease, *, allow_finished: bool = False, then: Sequence[Query] = ()
    ) -> None:
        """Locks the run's row and checks the lease.

        Args:
            then: queries to send right after the lock's, read from `self.then`: on
                PostgreSQL they share its round trip.
        """
        locked = tx.query(
            "SELECT state, last_sequence, owner, lease_token FROM runs WHERE run_id = ?"
            + tx.for_update,
            (lease.run_id,),
        )
        self.then = [tx.query(sql, params) for sql, params in then]
        row = locked.one()
        if row is None:
            raise NotFound(f"run runs/{lease.run_id} does not exist")
        if row["owner"] != lease.owner or row["lease_token"] != lease.token:
            raise LeaseLost(
                f"run runs/{lease.run_id} is no longer driven by this scheduler "
                f"(lease {lease.token}, now {row['owner'] or 'nobody'}/{row['lease_token']})"
            )
        self.state = RunState(row["state"])
        if self.state.finished and not allow_finished:
            raise RunFinished(f"run runs/{lease.run_id} already finished {self.state.value}")
        self.tx = tx
        self.run_id = lease.run_id
        self._first = int(row["last_sequence"])
        self.sequence = self._first
        self._events: list[EventRecord] = []

    def event(
        self,
        type_: EventType,
        message: str,
        step_id: str = "",
        attributes: dict[str, str] | None = None,
    ) -> None:
        self.sequence += 1
        self._events.append(
            _event(self.tx, self.run_id, self.sequence, type_, message, step_id, attributes)
        )

    def close(self) -> None:
        """Stores the events and the run's new last sequence (every writer must close)."""
        if self._events:
            _insert_events(self.tx, self._events)
            self._events = []
        if self.sequence != self._first:
            self.tx.move_last_sequence(self.run_id, self.sequence)


def _step(tx: Tx, run_id: str, step_id: str) -> Row:
    row = tx.one("SELECT * FROM steps WHERE run_id = ? AND step_id = ?", (run_id, step_id))
    if row is None:
        raise NotFound(f"run runs/{run_id} has no step {step_id!r}")
    return row


# -- runs and leases ------------------------------------------------------------------


_STEP_COLUMNS = "INSERT INTO steps (run_id, step_id, position, persona, kind, depends_on, state)"
_INSERT_STEPS = {
    # Rows [step_id, persona, kind, depends_on as JSON text]; position is the row's index.
    Dialect.SQLITE: _STEP_COLUMNS + " SELECT ?, json_extract(value, '$[0]'), key,"
    " json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]'), ?"
    " FROM json_each(?)",
    Dialect.POSTGRES: _STEP_COLUMNS + " SELECT ?, r ->> 0, (i - 1)::integer, r ->> 1, r ->> 2,"
    " r ->> 3, ? FROM jsonb_array_elements(?::jsonb) WITH ORDINALITY AS t(r, i)",
}


def create_run(tx: Tx, new: NewRun, owner: str | None, lease_seconds: float) -> CreatedRun:
    """Records a PENDING run with its steps and RUN_CREATED; claims it for `owner`.

    Raises:
        AlreadyExists: a run with the same request_id exists (on PostgreSQL also one
            that another scheduler's transaction is recording at the same moment: the
            insert waits for it, and finds it).
    """
    token = 1 if owner else 0
    inserted = tx.changed(
        "INSERT INTO runs (run_id, workflow_name, requirement, provider, request_id,"
        " created_by, state, error, create_time, owner, lease_token, lease_expires,"
        " cancel_requested, last_sequence) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, 0, 1)"
        " ON CONFLICT (request_id) WHERE request_id <> '' DO NOTHING",
        (
            new.run_id,
            new.workflow_name,
            new.requirement,
            new.provider,
            new.request_id,
            new.created_by,
            RunState.PENDING.value,
            tx.now,
            owner,
            token,
            tx.later(lease_seconds) if owner else None,
        ),
    )
    if not inserted:
        raise AlreadyExists(f"request_id {new.request_id!r} already made a run")
    tx.execute(
        "INSERT INTO run_specs (run_id, spec_json) VALUES (?, ?)", (new.run_id, new.spec_json)
    )
    # All steps in one statement, as one JSON array of rows: a 1,000-step run's rows sent
    # one by one (executemany) took PostgreSQL's writer 14-18 ms, this statement 8-10.
    steps = json.dumps(
        [
            [step_id, persona, kind, json.dumps(list(deps))]
            for step_id, persona, kind, deps in new.steps
        ]
    )
    tx.execute(_INSERT_STEPS[tx.dialect], (new.run_id, StepState.PENDING.value, steps))
    count = len(new.steps)
    append_event(
        tx,
        new.run_id,
        1,
        EventType.RUN_CREATED,
        f"run created: workflow {new.workflow_name}, {count} step{'s' if count != 1 else ''}",
        attributes={
            "workflow": new.workflow_name,
            "requested_provider": new.provider or "worker default",
        },
    )
    tx.announce(new.run_id, 1)
    return CreatedRun(
        Lease(new.run_id, owner, token) if owner else None, created_run(new, owner, tx.now)
    )


def claim_runs(
    tx: Tx, owner: str, lease_seconds: float, limit: int, everything: bool
) -> list[Claim]:
    """Takes unowned runs and runs whose lease expired (all others' too when `everything`).

    `everything` is for SQLite, where the file's writer lock proves no other scheduler
    is alive. On PostgreSQL, SKIP LOCKED lets schedulers claim side by side.
    """
    if everything:
        condition = "(owner IS NULL OR owner <> ?)"
        params: tuple[object, ...] = (owner,)
    else:
        condition = "(owner IS NULL OR lease_expires < ?)"
        params = (tx.now,)
    skip = " SKIP LOCKED" if tx.for_update else ""
    rows = tx.all(
        f"SELECT run_id, owner, lease_token, cancel_requested FROM runs WHERE state IN {ACTIVE}"
        f" AND {condition} ORDER BY create_time, run_id LIMIT ?{tx.for_update}{skip}",
        (*params, limit),
    )
    claims = []
    for row in rows:
        token = int(row["lease_token"]) + 1
        tx.execute(
            "UPDATE runs SET owner = ?, lease_token = ?, lease_expires = ? WHERE run_id = ?",
            (owner, token, tx.later(lease_seconds), row["run_id"]),
        )
        claims.append(
            Claim(
                lease=Lease(row["run_id"], owner, token),
                cancel_requested=bool(row["cancel_requested"]),
                taken_from=row["owner"],
            )
        )
    return claims


def renew_leases(tx: Tx, owner: str, lease_seconds: float) -> list[tuple[str, bool]]:
    """Extends every lease `owner` still holds; returns (run id, cancel requested) of each."""
    rows = tx.all(
        f"UPDATE runs SET lease_expires = ? WHERE owner = ? AND state IN {ACTIVE}"
        " RETURNING run_id, cancel_requested",
        (tx.later(lease_seconds), owner),
    )
    return [(row["run_id"], bool(row["cancel_requested"])) for row in rows]


def release_leases(tx: Tx, owner: str, run_ids: Sequence[str]) -> int:
    """Gives runs back so another scheduler can take them at once (a graceful stop)."""
    released = 0
    for run_id in run_ids:
        released += tx.changed(
            "UPDATE runs SET owner = NULL, lease_expires = NULL WHERE run_id = ? AND owner = ?",
            (run_id, owner),
        )
    if released and tx.for_update:
        tx.execute("SELECT pg_notify('maestro_runs', 'released')")
    return released


def request_cancel(tx: Tx, run_id: str) -> CancelRequest:
    """Records that the run should be cancelled; whoever drives it hears of it."""
    row = tx.one(
        "SELECT state, owner, lease_expires FROM runs WHERE run_id = ?" + tx.for_update, (run_id,)
    )
    if row is None:
        raise NotFound(f"run runs/{run_id} does not exist")
    state = RunState(row["state"])
    if not state.finished:
        tx.execute("UPDATE runs SET cancel_requested = 1 WHERE run_id = ?", (run_id,))
        if tx.for_update:
            tx.execute("SELECT pg_notify('maestro_cancel', ?)", (run_id,))
    live = row["owner"] is not None and (row["lease_expires"] or 0) >= tx.now
    return CancelRequest(state=state, owner=row["owner"], lease_live=live)


def heartbeat_scheduler(tx: Tx, scheduler_id: str, host: str, pid: int) -> None:
    """Records that this scheduler is alive, and proves it can write: the runs table's
    row locks, which every write for a run takes, can be had too."""
    tx.one("SELECT run_id FROM runs WHERE run_id = ''" + tx.for_update)
    tx.execute(
        "INSERT INTO schedulers (scheduler_id, host, pid, start_time, heartbeat_time)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (scheduler_id)"
        " DO UPDATE SET heartbeat_time = excluded.heartbeat_time",
        (scheduler_id, host, pid, tx.now, tx.now),
    )


def delete_run(tx: Tx, run_id: str) -> None:
    """Deletes a finished run and everything it recorded."""
    row = tx.one("SELECT state FROM runs WHERE run_id = ?" + tx.for_update, (run_id,))
    if row is None:
        raise NotFound(f"run runs/{run_id} does not exist")
    if not RunState(row["state"]).finished:
        raise FailedPrecondition(f"run runs/{run_id} has not finished; cancel it first")
    for table in ("decisions", "events", "artifacts", "dispatches", "steps", "run_specs", "runs"):
        tx.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))


# -- the run's lifecycle (under a lease) --------------------------------------------------


def recover_run(tx: Tx, lease: Lease, reason: str) -> list[str]:
    """After a takeover or restart: dispatches left RUNNING are lost, their steps PENDING.

    Returns the ids of the steps put back.
    """
    run = _RunWriter(tx, lease)
    rows = tx.all(
        "SELECT step_id, attempt, dispatch FROM dispatches WHERE run_id = ? AND state = ?"
        " ORDER BY step_id",
        (lease.run_id, DispatchState.RUNNING.value),
    )
    for row in rows:
        tx.execute(
            "UPDATE dispatches SET state = ?, end_time = ?, error = ? WHERE run_id = ?"
            " AND step_id = ? AND attempt = ? AND dispatch = ?",
            (
                DispatchState.LOST.value,
                tx.now,
                reason,
                lease.run_id,
                row["step_id"],
                row["attempt"],
                row["dispatch"],
            ),
        )
        tx.execute(
            "UPDATE steps SET state = ?, due_time = NULL WHERE run_id = ? AND step_id = ?"
            " AND state = ?",
            (StepState.PENDING.value, lease.run_id, row["step_id"], StepState.RUNNING.value),
        )
        run.event(
            EventType.ATTEMPT_LOST,
            f"{row['step_id']} attempt {row['attempt']} lost: {reason}",
            row["step_id"],
            {"attempt": str(row["attempt"]), "dispatch": str(row["dispatch"]), "reason": reason},
        )
    run.close()
    return [row["step_id"] for row in rows]


def start_run(tx: Tx, lease: Lease, note: str) -> None:
    """Marks the run RUNNING (keeping its first start time) with RUN_STARTED."""
    run = _RunWriter(tx, lease)
    tx.execute(
        "UPDATE runs SET state = ?, start_time = COALESCE(start_time, ?) WHERE run_id = ?",
        (RunState.RUNNING.value, tx.now, lease.run_id),
    )
    attributes = {"scheduler": lease.owner}
    if note:
        attributes |= {"redriven": "true", "reason": note}
    run.event(
        EventType.RUN_STARTED,
        f"run resumed: {note}" if note else "run started",
        attributes=attributes,
    )
    run.close()


def queue_run(tx: Tx, lease: Lease, reason: str) -> None:
    """The run waits for capacity before its first step (RUN_QUEUED)."""
    run = _RunWriter(tx, lease)
    if tx.changed(
        "UPDATE runs SET state = ? WHERE run_id = ? AND state = ?",
        (RunState.QUEUED.value, lease.run_id, RunState.PENDING.value),
    ):
        run.event(EventType.RUN_QUEUED, f"run queued: {reason}", attributes={"reason": reason})
    run.close()


def queue_step(tx: Tx, lease: Lease, step_id: str, reason: str) -> None:
    """A ready step waits for capacity (STEP_QUEUED)."""
    run = _RunWriter(tx, lease)
    if tx.changed(
        "UPDATE steps SET state = ? WHERE run_id = ? AND step_id = ? AND state = ?",
        (StepState.QUEUED.value, lease.run_id, step_id, StepState.PENDING.value),
    ):
        run.event(EventType.STEP_QUEUED, f"{step_id} queued: {reason}", step_id, {"reason": reason})
    run.close()


def note_capacity(
    tx: Tx,
    lease: Lease,
    type_: EventType,
    message: str,
    step_id: str,
    attributes: dict[str, str],
) -> None:
    """A model capacity event (breaker opened or closed, a fallback taken, a model
    paused by the API) in the run whose step saw it; changes no state."""
    run = _RunWriter(tx, lease)
    run.event(type_, message, step_id, attributes)
    run.close()


def start_dispatch(tx: Tx, lease: Lease, step_id: str, provider: str) -> tuple[int, int]:
    """Sends the step's attempt to a worker: a new attempt, or the lost one again.

    A dispatch lost to the platform is re-sent under the same attempt number, so the
    work's attempt count never grows for a fault that was not the work's.

    Returns:
        (attempt, dispatch) numbers, both from 1.
    """
    attempt, dispatch, _ = start_dispatch_with_context(tx, lease, step_id, provider, (), 0)
    return attempt, dispatch


def start_dispatch_with_context(
    tx: Tx,
    lease: Lease,
    step_id: str,
    provider: str,
    context_steps: Sequence[str],
    budget_bytes: int,
) -> tuple[int, int, list[StepContextRecord]]:
    """`start_dispatch`, and the attempt's context from `context_steps` (`step_context`)."""
    # The step and its latest dispatch (if any) in one statement, and the context's
    # listing: both sent with the lease's query.
    then: list[Query] = [
        (
            "SELECT s.attempts, s.round, s.persona, s.kind, d.attempt AS last_attempt,"
            " d.dispatch AS last_dispatch, d.state AS last_state FROM steps s"
            " LEFT JOIN dispatches d ON d.run_id = s.run_id AND d.step_id = s.step_id"
            " WHERE s.run_id = ? AND s.step_id = ?"
            " ORDER BY d.attempt DESC, d.dispatch DESC LIMIT 1",
            (lease.run_id, step_id),
        )
    ]
    if context_steps:
        then.append(context_listing(lease.run_id, context_steps))
    run = _RunWriter(tx, lease, then=then)
    step = run.then[0].one()
    if step is None:
        raise NotFound(f"run runs/{lease.run_id} has no step {step_id!r}")
    if step["last_state"] == DispatchState.LOST.value:
        attempt, dispatch = int(step["last_attempt"]), int(step["last_dispatch"]) + 1
    else:
        attempt, dispatch = int(step["attempts"]) + 1, 1
    tx.execute(
        "UPDATE steps SET state = ?, attempts = ?, error = '', due_time = NULL,"
        " start_time = COALESCE(start_time, ?) WHERE run_id = ? AND step_id = ?",
        (StepState.RUNNING.value, attempt, tx.now, lease.run_id, step_id),
    )
    tx.execute(
        "INSERT INTO dispatches (run_id, step_id, attempt, dispatch, round, state, start_time,"
        " provider) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            lease.run_id,
            step_id,
            attempt,
            dispatch,
            step["round"],
            DispatchState.RUNNING.value,
            tx.now,
            provider,
        ),
    )
    context = (
        step_context(tx, lease.run_id, context_steps, budget_bytes, run.then[1].all())
        if context_steps
        else []
    )
    again = f", dispatch {dispatch}" if dispatch > 1 else ""
    run.event(
        EventType.STEP_STARTED,
        f"{step_id} started ({step['persona'] or step['kind']}, attempt {attempt}{again})",
        step_id,
        {
            "attempt": str(attempt),
            "dispatch": str(dispatch),
            "persona": step["persona"],
            "scheduler": lease.owner,
            # Which provider answers is the worker's choice when none was requested;
            # the events the attempt causes carry the real one.
            "requested_provider": provider or "worker default",
        },
    )
    run.close()
    return attempt, dispatch, context


def _running_dispatch(tx: Tx, run_id: str, step_id: str, attempt: int, dispatch: int) -> Row:
    """A dispatch's state and usage so far, with its step's current round (`step_round`)."""
    return tx.one(*_running_dispatch_query(run_id, step_id, attempt, dispatch))


def _running_dispatch_query(run_id: str, step_id: str, attempt: int, dispatch: int) -> Query:
    return (
        "SELECT d.state, d.input_tokens, d.output_tokens, d.cache_read_tokens,"
        " d.cache_write_tokens, d.cost_usd, s.round AS step_round FROM dispatches d"
        " JOIN steps s ON s.run_id = d.run_id AND s.step_id = d.step_id"
        " WHERE d.run_id = ? AND d.step_id = ? AND d.attempt = ? AND d.dispatch = ?",
        (run_id, step_id, attempt, dispatch),
    )


def _usage_of(row: Row) -> Usage:
    return Usage(
        int(row["input_tokens"]),
        int(row["output_tokens"]),
        int(row["cache_read_tokens"]),
        int(row["cache_write_tokens"]),
        float(row["cost_usd"]),
    )


def _set_usage(
    tx: Tx, run_id: str, step_id: str, attempt: int, dispatch: int, old: Usage, new: Usage
) -> None:
    """Records a dispatch's usage so far and adds the difference to its step's total."""
    if new == old:
        return
    delta = new - old
    tx.execute(
        "UPDATE dispatches SET input_tokens = ?, output_tokens = ?, cache_read_tokens = ?,"
        " cache_write_tokens = ?, cost_usd = ? WHERE run_id = ? AND step_id = ? AND attempt = ?"
        " AND dispatch = ?",
        (
            new.input_tokens,
            new.output_tokens,
            new.cache_read_tokens,
            new.cache_write_tokens,
            new.cost_usd,
            run_id,
            step_id,
            attempt,
            dispatch,
        ),
    )
    tx.execute(
        "UPDATE steps SET input_tokens = input_tokens + ?, output_tokens = output_tokens + ?,"
        " cache_read_tokens = cache_read_tokens + ?, cache_write_tokens = cache_write_tokens + ?,"
        " cost_usd = cost_usd + ? WHERE run_id = ? AND step_id = ?",
        (
            delta.input_tokens,
            delta.output_tokens,
            delta.cache_read_tokens,
            delta.cache_write_tokens,
            delta.cost_usd,
            run_id,
            step_id,
        ),
    )


def record_progress(
    tx: Tx,
    lease: Lease,
    step_id: str,
    attempt: int,
    dispatch: int,
    notes: Sequence[tuple[str, str]],
    usage: Usage | None,
) -> bool:
    """Appends STEP_PROGRESS events (message, provider) and the usage reported so far.

    Returns:
        False when the dispatch is no longer running (a late report is dropped).
    """
    run = _RunWriter(tx, lease)
    row = _running_dispatch(tx, lease.run_id, step_id, attempt, dispatch)
    if row is None or row["state"] != DispatchState.RUNNING.value:
        return False
    if usage is not None:
        _set_usage(tx, lease.run_id, step_id, attempt, dispatch, _usage_of(row), usage)
    _progress(run, step_id, attempt, dispatch, notes)
    run.close()
    return True


def _progress(
    run: _RunWriter, step_id: str, attempt: int, dispatch: int, notes: Sequence[tuple[str, str]]
) -> None:
    for message, provider in notes:
        run.event(
            EventType.STEP_PROGRESS,
            message,
            step_id,
            {"attempt": str(attempt), "dispatch": str(dispatch), "provider": provider},
        )


def complete_step(
    tx: Tx,
    lease: Lease,
    step_id: str,
    attempt: int,
    dispatch: int,
    result: StepResultRecord,
    notes: Sequence[tuple[str, str]] = (),
) -> bool:
    """Records the result, its artifact versions and STEP_SUCCEEDED, once.

    Returns:
        False when this dispatch's outcome was already recorded (a repeated delivery).
    """
    paths = [path for path, _ in result.files]
    if len(set(paths)) != len(paths):
        # Each path's previous version is read once, before any is written.
        raise Internal(f"step {step_id!r} returned a path twice: {sorted(paths)}")
    then = [_running_dispatch_query(lease.run_id, step_id, attempt, dispatch)]
    if paths:
        then.append(
            (
                "SELECT path, version, step_id, round FROM artifacts WHERE run_id = ?"
                f" AND latest = 1 AND path IN ({', '.join('?' for _ in paths)})",
                (lease.run_id, *paths),
            )
        )
    run = _RunWriter(tx, lease, then=then)
    row = run.then[0].one()
    if row is None:
        raise NotFound(f"attempt {attempt} of step {step_id!r} was never dispatched")
    if row["state"] != DispatchState.RUNNING.value:
        return False
    previous = {found["path"]: found for found in run.then[1].all()} if paths else {}
    _progress(run, step_id, attempt, dispatch, notes)
    _set_usage(tx, lease.run_id, step_id, attempt, dispatch, _usage_of(row), result.usage)
    tx.execute(
        "UPDATE dispatches SET state = ?, end_time = ?, provider = ?, model = ? WHERE run_id = ?"
        " AND step_id = ? AND attempt = ? AND dispatch = ?",
        (
            DispatchState.SUCCEEDED.value,
            tx.now,
            result.provider,
            result.model,
            lease.run_id,
            step_id,
            attempt,
            dispatch,
        ),
    )
    for path, content in result.files:
        _write_artifact(
            run,
            step_id,
            attempt,
            int(row["step_round"]),
            path,
            content,
            result.provider,
            previous.get(path),
            shared=is_shared(path, result.shared_paths),
        )
    tx.execute(
        "UPDATE steps SET state = ?, summary = ?, provider = ?, model = ?, result_json = ?,"
        " end_time = ?, error = '' WHERE run_id = ? AND step_id = ?",
        (
            StepState.SUCCEEDED.value,
            result.summary,
            result.provider,
            result.model,
            result.result_json,
            tx.now,
            lease.run_id,
            step_id,
        ),
    )
    count = len(result.files)
    run.event(
        EventType.STEP_SUCCEEDED,
        f"{step_id} succeeded: {count} file{'s' if count != 1 else ''}",
        step_id,
        {
            "attempt": str(attempt),
            "dispatch": str(dispatch),
            "provider": result.provider,
            "model": result.model,
            "files": str(count),
            **result.usage.attributes(),
        },
    )
    run.close()
    return True


def _write_artifact(
    run: _RunWriter,
    step_id: str,
    attempt: int,
    round_: int,
    path: str,
    content: bytes,
    provider: str,
    previous: Row | None,
    *,
    shared: bool,
) -> None:
    """Stores a new latest version of `path` (`previous`: its latest version so far)."""
    tx = run.tx
    digest = hashlib.sha256(content).hexdigest()
    version = 1
    if previous is not None:
        version = int(previous["version"]) + 1
        tx.execute(
            "UPDATE artifacts SET latest = 0 WHERE run_id = ? AND path = ? AND latest = 1",
            (run.run_id, path),
        )
    tx.execute(
        "INSERT INTO artifacts (run_id, path, version, latest, step_id, attempt, round,"
        " size_bytes, sha256, content, create_time) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
        (
            run.run_id,
            path,
            version,
            step_id,
            attempt,
            round_,
            len(content),
            digest,
            content,
            tx.now,
        ),
    )
    attributes = {
        "path": path,
        "size_bytes": str(len(content)),
        "sha256": digest,
        "provider": provider,
        "version": str(version),
    }
    if previous is not None:
        attributes["replaces_step"] = previous["step_id"]
    run.event(EventType.ARTIFACT_RECORDED, f"{path} ({len(content)} bytes)", step_id, attributes)
    if (
        previous is not None
        and previous["step_id"] != step_id
        and previous["round"] == round_
        and not shared
    ):
        # Two steps of one round wrote one path the workflow does not declare shared:
        # the later wins, and it is said.
        run.event(
            EventType.ARTIFACT_CONFLICT,
            f"{path} written by {step_id} and {previous['step_id']} in round {round_}; "
            f"{step_id}'s version {version} is the latest",
            step_id,
            {
                "path": path,
                "step": step_id,
                "replaces_step": previous["step_id"],
                "round": str(round_),
                "version": str(version),
            },
        )


def lose_dispatch(
    tx: Tx,
    lease: Lease,
    step_id: str,
    attempt: int,
    dispatch: int,
    reason: str,
    usage: Usage | None,
    retry_in: float,
    notes: Sequence[tuple[str, str]] = (),
) -> float | None:
    """The platform failed this dispatch: ATTEMPT_LOST; the same attempt goes again later.

    Returns:
        When the step is due again (seconds since the epoch), or None when the
        dispatch's outcome was already recorded.
    """
    run = _RunWriter(tx, lease)
    row = _running_dispatch(tx, lease.run_id, step_id, attempt, dispatch)
    if row is None or row["state"] != DispatchState.RUNNING.value:
        return None
    _progress(run, step_id, attempt, dispatch, notes)
    due = tx.later(retry_in)
    if usage is not None:
        _set_usage(tx, lease.run_id, step_id, attempt, dispatch, _usage_of(row), usage)
    _end_dispatch(tx, lease.run_id, step_id, attempt, dispatch, DispatchState.LOST, reason)
    tx.execute(
        "UPDATE steps SET state = ?, due_time = ? WHERE run_id = ? AND step_id = ?",
        (StepState.PENDING.value, due, lease.run_id, step_id),
    )
    spent = _usage_of(_running_dispatch(tx, lease.run_id, step_id, attempt, dispatch))
    run.event(
        EventType.ATTEMPT_LOST,
        f"{step_id} attempt {attempt} lost, sending it again in {retry_in:.1f}s: {reason}",
        step_id,
        {
            "attempt": str(attempt),
            "dispatch": str(dispatch),
            "reason": reason,
            "retry_in_seconds": f"{retry_in:.2f}",
            **spent.attributes(),
        },
    )
    run.close()
    return due / 1_000_000


def _end_dispatch(
    tx: Tx,
    run_id: str,
    step_id: str,
    attempt: int,
    dispatch: int,
    state: DispatchState,
    reason: str,
) -> None:
    tx.execute(
        "UPDATE dispatches SET state = ?, end_time = ?, error = ? WHERE run_id = ? AND step_id = ?"
        " AND attempt = ? AND dispatch = ?",
        (state.value, tx.now, reason, run_id, step_id, attempt, dispatch),
    )


def fail_attempt(
    tx: Tx,
    lease: Lease,
    step_id: str,
    attempt: int,
    dispatch: int,
    reason: str,
    usage: Usage | None,
    retry_in: float | None,
    block: Sequence[str],
    notes: Sequence[tuple[str, str]] = (),
) -> float | None:
    """The work failed: STEP_RETRY_SCHEDULED when `retry_in` is set, else the step FAILS
    with STEP_FAILED and the steps in `block` still waiting become BLOCKED.

    Returns:
        When the step is due again (seconds since the epoch); None when it failed for
        good, or when the dispatch's outcome was already recorded.
    """
    run = _RunWriter(tx, lease)
    row = _running_dispatch(tx, lease.run_id, step_id, attempt, dispatch)
    if row is None or row["state"] != DispatchState.RUNNING.value:
        return None
    _progress(run, step_id, attempt, dispatch, notes)
    if usage is not None:
        _set_usage(tx, lease.run_id, step_id, attempt, dispatch, _usage_of(row), usage)
    _end_dispatch(tx, lease.run_id, step_id, attempt, dispatch, DispatchState.FAILED, reason)
    attributes = {"attempt": str(attempt), "dispatch": str(dispatch), "reason": reason}
    if retry_in is None:
        _fail_step(run, step_id, reason, attributes, block)
        run.close()
        return None
    due = tx.later(retry_in)
    tx.execute(
        "UPDATE steps SET state = ?, due_time = ?, error = ? WHERE run_id = ? AND step_id = ?",
        (StepState.PENDING.value, due, reason, lease.run_id, step_id),
    )
    attributes["retry_in_seconds"] = f"{retry_in:.2f}"
    run.event(
        EventType.STEP_RETRY_SCHEDULED,
        f"{step_id} attempt {attempt} failed, retrying in {retry_in:.1f}s: {reason}",
        step_id,
        attributes,
    )
    run.close()
    return due / 1_000_000


def fail_step(tx: Tx, lease: Lease, step_id: str, reason: str, block: Sequence[str]) -> None:
    """Fails a step that is not dispatched (its deadline passed while it waited)."""
    run = _RunWriter(tx, lease)
    _fail_step(run, step_id, reason, {"reason": reason}, block)
    run.close()


def _fail_step(
    run: _RunWriter,
    step_id: str,
    reason: str,
    attributes: dict[str, str],
    block: Sequence[str],
) -> None:
    tx = run.tx
    tx.execute(
        "UPDATE steps SET state = ?, error = ?, end_time = ?, due_time = NULL"
        " WHERE run_id = ? AND step_id = ?",
        (StepState.FAILED.value, reason, tx.now, run.run_id, step_id),
    )
    run.event(EventType.STEP_FAILED, f"{step_id} failed: {reason}", step_id, attributes)
    # In the same transaction: a crash here must not leave dependents waiting (a
    # re-drive would then call them CANCELLED instead of BLOCKED).
    blocked_reason = f"depends on failed step {step_id!r}"
    for dependent in block:
        if tx.changed(
            "UPDATE steps SET state = ?, error = ?, end_time = ? WHERE run_id = ? AND step_id = ?"
            " AND state IN (?, ?)",
            (
                StepState.BLOCKED.value,
                blocked_reason,
                tx.now,
                run.run_id,
                dependent,
                StepState.PENDING.value,
                StepState.QUEUED.value,
            ),
        ):
            run.event(
                EventType.STEP_BLOCKED,
                f"{dependent} blocked: {blocked_reason}",
                dependent,
                {"reason": blocked_reason},
            )


def finish_run(tx: Tx, lease: Lease, state: RunState, error: str) -> None:
    """Ends the run with its terminal event; unfinished steps become CANCELLED.

    The lease is given up with it: a finished run has no owner.
    """
    if not state.finished:
        raise ValueError(f"{state} is not a final run state")
    run = _RunWriter(tx, lease)
    for row in tx.all(
        "SELECT step_id, attempt, dispatch FROM dispatches WHERE run_id = ? AND state = ?",
        (lease.run_id, DispatchState.RUNNING.value),
    ):
        _end_dispatch(
            tx,
            lease.run_id,
            row["step_id"],
            row["attempt"],
            row["dispatch"],
            DispatchState.CANCELLED,
            f"the run ended {state.value}",
        )
    unfinished = tx.all(
        f"SELECT step_id FROM steps WHERE run_id = ? AND state IN {STEP_UNFINISHED}"
        " ORDER BY position",
        (lease.run_id,),
    )
    for step in unfinished:
        tx.execute(
            "UPDATE steps SET state = ?, end_time = ?, due_time = NULL"
            " WHERE run_id = ? AND step_id = ?",
            (StepState.CANCELLED.value, tx.now, lease.run_id, step["step_id"]),
        )
        run.event(
            EventType.STEP_CANCELLED,
            f"{step['step_id']} cancelled: the run ended {state.value}",
            step["step_id"],
        )
    tx.execute(
        "UPDATE runs SET state = ?, error = ?, end_time = ?, owner = NULL, lease_expires = NULL"
        " WHERE run_id = ?",
        (state.value, error, tx.now, lease.run_id),
    )
    message = f"run {state.value.lower()}" + (f": {error}" if error else "")
    run.event(RUN_TERMINAL_EVENT[state], message, attributes={"error": error} if error else {})
    run.close()

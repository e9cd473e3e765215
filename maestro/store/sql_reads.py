"""The store's reads: plain functions of a Tx, each run on one consistent snapshot."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from maestro.store.db import Dialect, Query, Row, Tx
from maestro.store.models import (
    ACTIVE_RUN_STATES,
    ArtifactRecord,
    EventRecord,
    EventType,
    NewRun,
    RunHead,
    RunRecord,
    RunState,
    StepContextRecord,
    StepOutputRecord,
    StepRecord,
    StepState,
    Usage,
)

ACTIVE = "(" + ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_RUN_STATES)) + ")"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(value: int | None) -> datetime | None:
    """A stored time (microseconds since the epoch) as an exact datetime."""
    return None if value is None else EPOCH + timedelta(microseconds=value)


def from_datetime(value: datetime) -> int:
    """The stored form of a datetime (exact: the inverse of to_datetime)."""
    return (value - EPOCH) // timedelta(microseconds=1)


@functools.lru_cache(maxsize=4096)
def _dependencies(stored: str) -> tuple[str, ...]:
    # Shared by every read of the same list: runs of one workflow repeat them, and the
    # 1,000 steps of a large run are read whole by every GetRun.
    return tuple(json.loads(stored))


_STEP_COLUMNS = (
    "run_id, step_id, persona, kind, depends_on, state, attempts, round, start_time,"
    " end_time, due_time, error, summary, provider, model, result_json, feedback,"
    " attempts_before_round, input_tokens, output_tokens, cache_read_tokens,"
    " cache_write_tokens, cost_usd"
)
"""The columns `_step` reads, in its order (a run's steps are read as plain tuples)."""


def _step(values: tuple[Any, ...]) -> StepRecord:
    (
        run_id,
        step_id,
        persona,
        kind,
        depends_on,
        state,
        attempts,
        round_,
        start_time,
        end_time,
        due_time,
        error,
        summary,
        provider,
        model,
        result_json,
        feedback,
        attempts_before_round,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        cost_usd,
    ) = values
    return StepRecord(
        run_id=run_id,
        step_id=step_id,
        persona=persona,
        kind=kind,
        depends_on=_dependencies(depends_on),
        state=StepState(state),
        attempts=attempts,
        round=round_,
        start_time=to_datetime(start_time),
        end_time=to_datetime(end_time),
        due_time=to_datetime(due_time),
        error=error,
        summary=summary,
        provider=provider,
        model=model,
        result_json=result_json,
        feedback=feedback,
        attempts_before_round=attempts_before_round,
        usage=Usage(
            int(input_tokens),
            int(output_tokens),
            int(cache_read_tokens),
            int(cache_write_tokens),
            float(cost_usd),
        ),
    )


def _run(row: Row, steps: tuple[StepRecord, ...]) -> RunRecord:
    create_time = to_datetime(row["create_time"])
    assert create_time is not None
    return RunRecord(
        run_id=row["run_id"],
        workflow_name=row["workflow_name"],
        spec_json=row["spec_json"],
        requirement=row["requirement"],
        provider=row["provider"],
        request_id=row["request_id"],
        created_by=row["created_by"],
        state=RunState(row["state"]),
        error=row["error"],
        create_time=create_time,
        start_time=to_datetime(row["start_time"]),
        end_time=to_datetime(row["end_time"]),
        owner=row["owner"],
        last_sequence=row["last_sequence"],
        steps=steps,
    )


def created_run(new: NewRun, owner: str | None, create_time: int) -> RunRecord:
    """The record of a run `create_run` has just inserted, as reading it back would give
    it (a unit test compares the two), without reading 1,000 steps back."""
    no_usage = Usage()
    return RunRecord(
        run_id=new.run_id,
        workflow_name=new.workflow_name,
        spec_json=new.spec_json,
        requirement=new.requirement,
        provider=new.provider,
        request_id=new.request_id,
        created_by=new.created_by,
        state=RunState.PENDING,
        error="",
        create_time=to_datetime(create_time),
        start_time=None,
        end_time=None,
        owner=owner,
        last_sequence=1,
        steps=tuple(
            StepRecord(
                run_id=new.run_id,
                step_id=step_id,
                persona=persona,
                kind=kind,
                depends_on=tuple(depends_on),
                state=StepState.PENDING,
                attempts=0,
                round=0,
                start_time=None,
                end_time=None,
                due_time=None,
                error="",
                summary="",
                provider="",
                model="",
                result_json="",
                usage=no_usage,
            )
            for step_id, persona, kind, depends_on in new.steps
        ),
    )


def _with_steps(tx: Tx, rows: list[Row]) -> list[RunRecord]:
    if not rows:
        return []
    ids = [row["run_id"] for row in rows]
    marks = ", ".join("?" for _ in ids)
    by_run: dict[str, list[StepRecord]] = {run_id: [] for run_id in ids}
    for values in tx.values(
        f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id IN ({marks}) ORDER BY run_id, position",
        ids,
    ):
        by_run[values[0]].append(_step(values))
    return [_run(row, tuple(by_run[row["run_id"]])) for row in rows]


# A run's row with its workflow (kept apart: see schema.run_specs).
_RUN_ROWS = (
    "SELECT runs.*, run_specs.spec_json FROM runs JOIN run_specs ON run_specs.run_id = runs.run_id"
)


def get_run(tx: Tx, run_id: str) -> RunRecord | None:
    row = tx.one(f"{_RUN_ROWS} WHERE runs.run_id = ?", (run_id,))
    return None if row is None else _with_steps(tx, [row])[0]


def run_head(tx: Tx, run_id: str) -> RunHead | None:
    """The run's state, last event and creator, or None when there is no such run."""
    row = tx.one("SELECT state, last_sequence, created_by FROM runs WHERE run_id = ?", (run_id,))
    if row is None:
        return None
    return RunHead(RunState(row["state"]), int(row["last_sequence"]), str(row["created_by"]))


def find_run_by_request_id(tx: Tx, request_id: str) -> RunRecord | None:
    row = tx.one(f"{_RUN_ROWS} WHERE request_id = ?", (request_id,))
    return None if row is None else _with_steps(tx, [row])[0]


def run_progress(tx: Tx, run_ids: Sequence[str]) -> dict[str, tuple[RunState, int]]:
    """(state, last event sequence) of each run that exists."""
    if not run_ids:
        return {}
    marks = ", ".join("?" for _ in run_ids)
    rows = tx.all(
        f"SELECT run_id, state, last_sequence FROM runs WHERE run_id IN ({marks})", list(run_ids)
    )
    return {row["run_id"]: (RunState(row["state"]), int(row["last_sequence"])) for row in rows}


def list_runs(
    tx: Tx,
    limit: int,
    after: tuple[datetime, str] | None,
    created_by: str | None,
    waiting_for_decision: bool = False,
) -> list[RunRecord]:
    """Runs newest first, after the (create time, run id) cursor, of one creator or all;
    only those with a step waiting for a person's decision when asked."""
    where: list[str] = []
    params: list[object] = []
    if waiting_for_decision:
        where.append(
            "EXISTS (SELECT 1 FROM steps WHERE steps.run_id = runs.run_id AND steps.state = ?)"
        )
        params.append(StepState.WAITING_APPROVAL.value)
    if after is not None:
        when = from_datetime(after[0])
        where.append("(create_time < ? OR (create_time = ? AND runs.run_id < ?))")
        params.extend((when, when, after[1]))
    if created_by is not None:
        where.append("created_by = ?")
        params.append(created_by)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = tx.all(
        f"{_RUN_ROWS}{clause} ORDER BY create_time DESC, runs.run_id DESC LIMIT ?",
        (*params, limit),
    )
    return _with_steps(tx, rows)


def expired_run_ids(tx: Tx, finished_before: datetime, limit: int) -> list[str]:
    """Runs that ended before the given time, oldest first."""
    rows = tx.all(
        "SELECT run_id FROM runs WHERE end_time IS NOT NULL AND end_time < ?"
        " ORDER BY end_time LIMIT ?",
        (from_datetime(finished_before), limit),
    )
    return [row["run_id"] for row in rows]


def unfinished_run_ids(tx: Tx) -> list[str]:
    rows = tx.all(f"SELECT run_id FROM runs WHERE state IN {ACTIVE} ORDER BY create_time")
    return [row["run_id"] for row in rows]


def _event(row: Row) -> EventRecord:
    time = to_datetime(row["time"])
    assert time is not None
    return EventRecord(
        run_id=row["run_id"],
        sequence=row["sequence"],
        type=EventType(row["type"]),
        step_id=row["step_id"],
        time=time,
        message=row["message"],
        attributes=json.loads(row["attributes"]),
    )


def events_after(tx: Tx, run_id: str, after_sequence: int, limit: int) -> list[EventRecord]:
    rows = tx.all(
        "SELECT * FROM events WHERE run_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
        (run_id, after_sequence, limit),
    )
    return [_event(row) for row in rows]


def _artifact(row: Row, *, with_content: bool) -> ArtifactRecord:
    create_time = to_datetime(row["create_time"])
    assert create_time is not None
    return ArtifactRecord(
        run_id=row["run_id"],
        path=row["path"],
        step_id=row["step_id"],
        version=row["version"],
        attempt=row["attempt"],
        round=row["round"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        create_time=create_time,
        latest=bool(row["latest"]),
        content=bytes(row["content"]) if with_content else None,
    )


_ARTIFACT_COLUMNS = (
    "run_id, path, step_id, version, attempt, round, latest, size_bytes, sha256, create_time"
)


def list_artifacts(
    tx: Tx,
    run_id: str,
    all_versions: bool,
    limit: int | None = None,
    after: str | None = None,
    after_version: int = 0,
) -> list[ArtifactRecord]:
    """The latest version of each path (or every version), by path; a page of them
    when `limit` (and `after`, the last path of the previous page, with its version
    when listing every version) are given."""
    latest = "" if all_versions else " AND latest = 1"
    params: list[object] = [run_id]
    if after is not None:
        latest += " AND (path > ? OR (path = ? AND version > ?))"
        params.extend((after, after, after_version if all_versions else 2**31))
    page = ""
    if limit is not None:
        page = " LIMIT ?"
        params.append(limit)
    rows = tx.all(
        f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE run_id = ?{latest}"
        f" ORDER BY path, version{page}",
        tuple(params),
    )
    return [_artifact(row, with_content=False) for row in rows]


def get_artifact(tx: Tx, run_id: str, path: str, version: int | None) -> ArtifactRecord | None:
    if version is None:
        row = tx.one(
            "SELECT * FROM artifacts WHERE run_id = ? AND path = ? AND latest = 1",
            (run_id, path),
        )
    else:
        row = tx.one(
            "SELECT * FROM artifacts WHERE run_id = ? AND path = ? AND version = ?",
            (run_id, path, version),
        )
    return None if row is None else _artifact(row, with_content=True)


# `+latest` (a no-op on the value) keeps SQLite from searching artifacts_latest, every
# latest file of the run, instead of artifacts_by_step: without it, each dispatch of a
# long run read all the run's files (found with the bench: quadratic in the steps).
_LATEST_BY_STEP = "+latest = 1"


def step_outputs(tx: Tx, run_id: str, step_ids: Sequence[str]) -> list[StepOutputRecord]:
    """Summaries and latest files of the given succeeded steps, in the order asked."""
    if not step_ids:
        return []
    marks = ", ".join("?" for _ in step_ids)
    steps = {
        row["step_id"]: row
        for row in tx.all(
            f"SELECT step_id, persona, summary FROM steps WHERE run_id = ? AND step_id IN"
            f" ({marks}) AND state = ?",
            (run_id, *step_ids, StepState.SUCCEEDED.value),
        )
    }
    files: dict[str, list[tuple[str, bytes]]] = {step_id: [] for step_id in steps}
    if steps:
        found = list(steps)
        found_marks = ", ".join("?" for _ in found)
        for row in tx.all(
            f"SELECT step_id, path, content FROM artifacts WHERE run_id = ?"
            f" AND step_id IN ({found_marks}) AND {_LATEST_BY_STEP}",
            (run_id, *found),
        ):
            files[row["step_id"]].append((row["path"], bytes(row["content"])))
        for paths in files.values():
            paths.sort()
    return [
        StepOutputRecord(
            step_id=step_id,
            persona=steps[step_id]["persona"],
            summary=steps[step_id]["summary"],
            files=tuple(files[step_id]),
        )
        for step_id in step_ids
        if step_id in steps
    ]


def choose_files(
    files_by_step: Sequence[tuple[str, Sequence[tuple[str, int]]]], budget_bytes: int
) -> set[tuple[str, str]]:
    """Which (step id, path) fit the byte budget, nearest step first, in path order."""
    remaining = budget_bytes
    chosen: set[tuple[str, str]] = set()
    for step_id, files in files_by_step:
        for path, size in files:
            if size <= remaining:
                chosen.add((step_id, path))
                remaining -= size
    return chosen


def context_listing(run_id: str, step_ids: Sequence[str]) -> Query:
    """The query of `step_context`'s listing: the steps and their latest files' sizes in
    one statement (a step without files comes back once, with no path)."""
    marks = ", ".join("?" for _ in step_ids)
    return (
        "SELECT s.step_id, s.persona, s.summary, a.path, a.size_bytes FROM steps s"
        " LEFT JOIN artifacts a ON a.run_id = s.run_id AND a.step_id = s.step_id"
        f" AND +a.latest = 1 WHERE s.run_id = ? AND s.step_id IN ({marks}) AND s.state = ?",
        (run_id, *step_ids, StepState.SUCCEEDED.value),
    )


def step_context(
    tx: Tx,
    run_id: str,
    step_ids: Sequence[str],
    budget_bytes: int,
    listing: list[Row] | None = None,
) -> list[StepContextRecord]:
    """The context of a step: the given succeeded steps (nearest first), each with its
    summary and as many of its files as fit `budget_bytes`; only chosen files are read.

    Args:
        listing: the rows of `context_listing`, when the caller already read them.
    """
    if not step_ids:
        return []
    if listing is None:
        listing = tx.all(*context_listing(run_id, step_ids))
    steps: dict[str, Row] = {}
    sizes: dict[str, list[tuple[str, int]]] = {}
    for row in listing:
        steps.setdefault(row["step_id"], row)
        listed = sizes.setdefault(row["step_id"], [])
        if row["path"] is not None:
            listed.append((row["path"], int(row["size_bytes"])))
    order = [step_id for step_id in step_ids if step_id in steps]
    for listed in sizes.values():
        listed.sort()
    chosen = choose_files([(step_id, sizes[step_id]) for step_id in order], budget_bytes)
    contents: dict[tuple[str, str], bytes] = {}
    if chosen:
        for row in tx.all(
            f"SELECT step_id, path, content FROM artifacts WHERE run_id = ?"
            f" AND step_id IN ({', '.join('?' for _ in order)}) AND {_LATEST_BY_STEP}",
            (run_id, *order),
        ):
            key = (row["step_id"], row["path"])
            if key in chosen:
                contents[key] = bytes(row["content"])
    return [
        StepContextRecord(
            step_id=step_id,
            persona=steps[step_id]["persona"],
            summary=steps[step_id]["summary"],
            files=tuple(
                (p, contents[(step_id, p)]) for p, _ in sizes[step_id] if (step_id, p) in contents
            ),
            omitted_paths=tuple(p for p, _ in sizes[step_id] if (step_id, p) not in contents),
        )
        for step_id in order
    ]


def owned_paths(tx: Tx, run_id: str) -> dict[str, str]:
    """The latest writer of every path of the run: path -> step id."""
    rows = tx.all("SELECT path, step_id FROM artifacts WHERE run_id = ? AND latest = 1", (run_id,))
    return {row["path"]: row["step_id"] for row in rows}


def table_names(tx: Tx) -> set[str]:
    """The tables that exist (to tell a new, a legacy and a migrated database apart)."""
    if tx.dialect is Dialect.SQLITE:
        rows = tx.all("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row["name"] for row in rows}
    rows = tx.all(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    return {row["table_name"] for row in rows}


def schema_revision(tx: Tx) -> str | None:
    """The Alembic revision the database is at; None when it was never migrated."""
    if "alembic_version" not in table_names(tx):
        return None
    row = tx.one("SELECT version_num FROM alembic_version")
    return None if row is None else str(row["version_num"])

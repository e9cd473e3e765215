"""The SQLite store: WAL mode, async driver, one writer, many readers.

Writes go through one connection under an asyncio lock with BEGIN IMMEDIATE, so a
transaction never interleaves with another task's and never has to upgrade a read lock
(the usual source of SQLITE_BUSY). Readers in other processes (the gateway) see each
commit at once thanks to WAL.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiosqlite

from maestro.core.errors import AlreadyExists, FailedPrecondition, Internal, NotFound
from maestro.store.base import RunFinished, Store
from maestro.store.models import (
    RUN_TERMINAL_EVENT,
    ArtifactRecord,
    EventRecord,
    EventType,
    NewRun,
    RunRecord,
    RunState,
    StepOutputRecord,
    StepResultRecord,
)
from maestro.store.schema import SCHEMA, SCHEMA_VERSION
from maestro.store.sqlite_rows import (
    Row,
    artifact_from_row,
    event_from_row,
    run_from_row,
    step_from_row,
)

log = logging.getLogger(__name__)


def _take_writer_lock(path: str) -> IO[bytes]:
    lock_file = open(f"{path}.writer-lock", "ab")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise FailedPrecondition(
            f"another scheduler is already writing {path}; one database file has one writer"
        ) from None
    return lock_file


def _now() -> str:
    # Fixed width (always microseconds), so text order is time order.
    return datetime.now(UTC).isoformat(timespec="microseconds")


class SqliteStore(Store):
    """Run state in one SQLite file."""

    def __init__(self, db: aiosqlite.Connection, writer_lock: IO[bytes] | None = None) -> None:
        self._db = db
        # One operation at a time on this connection, reads included: aiosqlite runs a
        # statement and its fetches as separate jobs on its thread, and statements that
        # interleave on one connection share the oldest one's read snapshot, so a read
        # could miss a run committed a moment ago, and a write could begin on a stale
        # snapshot and fail as "database is locked".
        self._lock = asyncio.Lock()
        self._writer_lock = writer_lock

    @classmethod
    async def open(cls, path: str, *, writer: bool = False) -> SqliteStore:
        """Opens (and if needed creates) the database file with the schema.

        Args:
            path: the database file.
            writer: take the file's writer lock, held until close(): two schedulers
                driving the same runs from one file would record every step twice.

        Raises:
            FailedPrecondition: `writer` and another process holds the writer lock.
        """
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer_lock = await asyncio.to_thread(_take_writer_lock, path) if writer else None
        try:
            # isolation_level=None: we issue BEGIN ourselves.
            db = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            if writer_lock is not None:
                writer_lock.close()
            raise
        store = cls(db, writer_lock)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=10000")
            await store._create_schema()
        except BaseException:
            # aiosqlite's thread is not a daemon: left open, it would keep a process
            # that has just said it cannot start alive for ever.
            await store.close()
            raise
        return store

    async def _create_schema(self) -> None:
        # CREATE ... IF NOT EXISTS is idempotent, so the scheduler and the gateway may
        # both open a new file at the same moment; executescript commits on its own.
        await self._db.executescript(SCHEMA)
        async with self._transaction() as db:
            row = await self._fetchone("SELECT version FROM schema_version")
            if row is None:
                await db.execute(
                    "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                )
            elif row["version"] != SCHEMA_VERSION:
                raise FailedPrecondition(
                    f"database schema version {row['version']} is not {SCHEMA_VERSION}"
                )

    async def close(self) -> None:
        await self._db.close()
        if self._writer_lock is not None:
            self._writer_lock.close()  # closing the file releases the flock

    @asynccontextmanager
    async def _transaction(
        self, *, unfinished_run: str | None = None, begin: str = "BEGIN IMMEDIATE"
    ) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction, all or nothing, even when the caller is cancelled.

        Args:
            unfinished_run: refuse the write (RunFinished) unless this run is still
                unfinished, so nothing is recorded after a run's terminal event.
            begin: BEGIN IMMEDIATE for writes (the write lock up front, so the
                transaction never has to upgrade); BEGIN DEFERRED for a read snapshot.
        """
        async with self._lock:
            try:
                # BEGIN is inside the try: a cancellation that arrives while BEGIN is
                # queued on aiosqlite's thread must still be followed by a ROLLBACK, or
                # the connection would stay inside a transaction for good.
                await self._db.execute(begin)
                if unfinished_run is not None:
                    await self._require_unfinished(unfinished_run)
                yield self._db
                await self._db.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise

    def _snapshot(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        """A read transaction: every statement inside sees the same committed state.

        Reads of one statement only need the lock (a statement on its own is its own
        transaction); those of several take a snapshot, so they agree with each other.
        """
        return self._transaction(begin="BEGIN DEFERRED")

    async def check(self) -> None:
        async with self._lock:
            if self._db.in_transaction:
                # Only _transaction opens transactions, and it holds the lock: this
                # one was left open.
                raise Internal("the store's connection is stuck inside a transaction")
        # A real read of the file; the writer also takes (and releases) the write lock,
        # so a database another process keeps locked shows as not ready.
        begin = "BEGIN IMMEDIATE" if self._writer_lock is not None else "BEGIN DEFERRED"
        async with self._transaction(begin=begin):
            await self._fetchone("SELECT version FROM schema_version")

    async def _rollback(self) -> None:
        # aiosqlite runs statements in order on its one thread, so this ROLLBACK comes
        # after whatever was already queued, even while this task is being cancelled.
        try:
            await self._db.execute("ROLLBACK")
        except sqlite3.OperationalError as err:
            if "no transaction is active" not in str(err):
                raise
            log.debug("rollback: the transaction had not begun")

    async def _require_unfinished(self, run_id: str) -> None:
        row = await self._fetchone("SELECT state FROM runs WHERE run_id = ?", (run_id,))
        if row is None:
            raise NotFound(f"run {run_id!r} does not exist")
        if RunState(row["state"]).finished:
            raise RunFinished(f"run {run_id} already finished {row['state']}")

    # Every cursor is closed at once: a statement left open keeps its read snapshot
    # (WAL) alive, so later reads on this shared connection would miss new commits and
    # a BEGIN IMMEDIATE on a stale snapshot fails with "database is locked".

    async def _fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self._db.execute(sql, args) as cursor:
            return list(await cursor.fetchall())

    async def _fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        async with self._db.execute(sql, args) as cursor:
            return await cursor.fetchone()

    @staticmethod
    async def _append_event(
        db: aiosqlite.Connection,
        run_id: str,
        type_: EventType,
        message: str,
        *,
        step_id: str = "",
        attributes: dict[str, str] | None = None,
    ) -> None:
        # The next sequence is computed inside the write transaction, so sequences stay
        # dense: one writer, and (run_id, sequence) is the primary key besides.
        await db.execute(
            "INSERT INTO events (run_id, sequence, type, step_id, time, message, attributes)"
            " VALUES (?, (SELECT COALESCE(MAX(sequence), 0) + 1 FROM events WHERE run_id = ?),"
            " ?, ?, ?, ?, ?)",
            (run_id, run_id, type_.value, step_id, _now(), message, json.dumps(attributes or {})),
        )

    # -- writes -------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> None:
        now = _now()
        async with self._transaction() as db:
            if new.request_id:
                existing = await self._fetchone(
                    "SELECT run_id FROM runs WHERE request_id = ?", (new.request_id,)
                )
                if existing is not None:
                    raise AlreadyExists(f"request_id {new.request_id!r} already made a run")
            await db.execute(
                "INSERT INTO runs (run_id, workflow_name, spec_json, requirement, provider,"
                " request_id, state, create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.run_id,
                    new.workflow_name,
                    new.spec_json,
                    new.requirement,
                    new.provider,
                    new.request_id,
                    RunState.PENDING.value,
                    now,
                ),
            )
            await db.executemany(
                "INSERT INTO steps (run_id, step_id, position, persona, depends_on, state)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (new.run_id, step_id, i, persona, json.dumps(list(deps)), "PENDING")
                    for i, (step_id, persona, deps) in enumerate(new.steps)
                ],
            )
            await self._append_event(
                db,
                new.run_id,
                EventType.RUN_CREATED,
                f"run created: workflow {new.workflow_name}, {len(new.steps)} steps",
                attributes={
                    "workflow": new.workflow_name,
                    "requested_provider": new.provider or "worker default",
                },
            )

    async def start_run(self, run_id: str, *, redriven: bool = False) -> None:
        async with self._transaction(unfinished_run=run_id) as db:
            await db.execute(
                "UPDATE runs SET state = 'RUNNING', start_time = COALESCE(start_time, ?)"
                " WHERE run_id = ?",
                (_now(), run_id),
            )
            message = "run re-driven after a scheduler restart" if redriven else "run started"
            await self._append_event(
                db,
                run_id,
                EventType.RUN_STARTED,
                message,
                attributes={"redriven": "true"} if redriven else {},
            )

    async def start_attempt(self, run_id: str, step_id: str, provider: str) -> int:
        now = _now()
        async with self._transaction(unfinished_run=run_id) as db:
            row = await self._fetchone(
                "SELECT attempts, persona FROM steps WHERE run_id = ? AND step_id = ?",
                (run_id, step_id),
            )
            if row is None:
                raise NotFound(f"step {step_id!r} of run {run_id!r} does not exist")
            attempt = int(row["attempts"]) + 1
            await db.execute(
                "UPDATE steps SET state = 'RUNNING', attempts = ?, error = '',"
                " start_time = COALESCE(start_time, ?) WHERE run_id = ? AND step_id = ?",
                (attempt, now, run_id, step_id),
            )
            await db.execute(
                "INSERT INTO attempts (run_id, step_id, attempt, state, start_time,"
                " heartbeat_time) VALUES (?, ?, ?, 'RUNNING', ?, ?)",
                (run_id, step_id, attempt, now, now),
            )
            await self._append_event(
                db,
                run_id,
                EventType.STEP_STARTED,
                f"{step_id} started ({row['persona']}, attempt {attempt})",
                step_id=step_id,
                attributes={
                    "attempt": str(attempt),
                    "persona": row["persona"],
                    # Which provider answers is the worker's choice when none was
                    # requested; the events the attempt causes carry the real one.
                    "requested_provider": provider or "worker default",
                },
            )
        return attempt

    async def record_progress(
        self, run_id: str, step_id: str, attempt: int, message: str, provider: str
    ) -> None:
        async with self._transaction(unfinished_run=run_id) as db:
            await self._touch(db, run_id, step_id, attempt)
            await self._append_event(
                db,
                run_id,
                EventType.STEP_PROGRESS,
                message,
                step_id=step_id,
                attributes={"attempt": str(attempt), "provider": provider},
            )

    async def record_heartbeat(self, run_id: str, step_id: str, attempt: int) -> None:
        async with self._transaction(unfinished_run=run_id) as db:
            await self._touch(db, run_id, step_id, attempt)

    @staticmethod
    async def _touch(db: aiosqlite.Connection, run_id: str, step_id: str, attempt: int) -> None:
        await db.execute(
            "UPDATE attempts SET heartbeat_time = ? WHERE run_id = ? AND step_id = ?"
            " AND attempt = ?",
            (_now(), run_id, step_id, attempt),
        )

    async def complete_step(
        self, run_id: str, step_id: str, attempt: int, result: StepResultRecord
    ) -> bool:
        now = _now()
        async with self._transaction(unfinished_run=run_id) as db:
            row = await self._fetchone(
                "SELECT state FROM attempts WHERE run_id = ? AND step_id = ? AND attempt = ?",
                (run_id, step_id, attempt),
            )
            if row is None:
                raise NotFound(f"attempt {attempt} of step {step_id!r} does not exist")
            if row["state"] != "RUNNING":
                # A repeated delivery of a result already recorded (or of a lost attempt).
                return False
            await db.execute(
                "UPDATE attempts SET state = 'SUCCEEDED', end_time = ? WHERE run_id = ?"
                " AND step_id = ? AND attempt = ?",
                (now, run_id, step_id, attempt),
            )
            for path, content in result.files:
                digest = hashlib.sha256(content).hexdigest()
                previous = await self._fetchone(
                    "SELECT step_id FROM artifacts WHERE run_id = ? AND path = ?", (run_id, path)
                )
                await db.execute(
                    "INSERT INTO artifacts (run_id, path, step_id, attempt, size_bytes, sha256,"
                    " content, create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (run_id, path) DO UPDATE SET step_id = excluded.step_id,"
                    " attempt = excluded.attempt, size_bytes = excluded.size_bytes,"
                    " sha256 = excluded.sha256, content = excluded.content,"
                    " create_time = excluded.create_time",
                    (run_id, path, step_id, attempt, len(content), digest, content, now),
                )
                attributes = {
                    "path": path,
                    "size_bytes": str(len(content)),
                    "sha256": digest,
                    "provider": result.provider,
                }
                if previous is not None:
                    attributes["replaces_step"] = previous["step_id"]
                await self._append_event(
                    db,
                    run_id,
                    EventType.ARTIFACT_RECORDED,
                    f"{path} ({len(content)} bytes)",
                    step_id=step_id,
                    attributes=attributes,
                )
            await db.execute(
                "UPDATE steps SET state = 'SUCCEEDED', summary = ?, provider = ?, model = ?,"
                " input_tokens = ?, output_tokens = ?, end_time = ?, error = ''"
                " WHERE run_id = ? AND step_id = ?",
                (
                    result.summary,
                    result.provider,
                    result.model,
                    result.input_tokens,
                    result.output_tokens,
                    now,
                    run_id,
                    step_id,
                ),
            )
            await self._append_event(
                db,
                run_id,
                EventType.STEP_SUCCEEDED,
                f"{step_id} succeeded: {len(result.files)} files",
                step_id=step_id,
                attributes={
                    "attempt": str(attempt),
                    "provider": result.provider,
                    "model": result.model,
                    "files": str(len(result.files)),
                    "input_tokens": str(result.input_tokens),
                    "output_tokens": str(result.output_tokens),
                },
            )
        return True

    async def fail_attempt(
        self,
        run_id: str,
        step_id: str,
        attempt: int,
        reason: str,
        *,
        retry_in: float | None,
        block: Sequence[str] = (),
    ) -> None:
        now = _now()
        async with self._transaction(unfinished_run=run_id) as db:
            await db.execute(
                "UPDATE attempts SET state = 'FAILED', end_time = ?, error = ?"
                " WHERE run_id = ? AND step_id = ? AND attempt = ? AND state = 'RUNNING'",
                (now, reason, run_id, step_id, attempt),
            )
            attributes = {"attempt": str(attempt), "reason": reason}
            if retry_in is not None:
                attributes["retry_in_seconds"] = f"{retry_in:.2f}"
                await self._append_event(
                    db,
                    run_id,
                    EventType.STEP_RETRY_SCHEDULED,
                    f"{step_id} attempt {attempt} failed, retrying in {retry_in:.1f}s: {reason}",
                    step_id=step_id,
                    attributes=attributes,
                )
                return
            await db.execute(
                "UPDATE steps SET state = 'FAILED', error = ?, end_time = ?"
                " WHERE run_id = ? AND step_id = ?",
                (reason, now, run_id, step_id),
            )
            await self._append_event(
                db,
                run_id,
                EventType.STEP_FAILED,
                f"{step_id} failed: {reason}",
                step_id=step_id,
                attributes=attributes,
            )
            # In the same transaction: a crash here must not leave dependents PENDING
            # (a re-drive would then call them CANCELLED instead of BLOCKED).
            blocked_reason = f"depends on failed step {step_id!r}"
            for dependent in block:
                cursor = await db.execute(
                    "UPDATE steps SET state = 'BLOCKED', error = ?, end_time = ?"
                    " WHERE run_id = ? AND step_id = ? AND state = 'PENDING'",
                    (blocked_reason, now, run_id, dependent),
                )
                if cursor.rowcount:
                    await self._append_event(
                        db,
                        run_id,
                        EventType.STEP_BLOCKED,
                        f"{dependent} blocked: {blocked_reason}",
                        step_id=dependent,
                        attributes={"reason": blocked_reason},
                    )

    async def finish_run(self, run_id: str, state: RunState, error: str) -> None:
        if not state.finished:
            raise ValueError(f"{state} is not a final run state")
        now = _now()
        async with self._transaction() as db:
            row = await self._fetchone("SELECT state FROM runs WHERE run_id = ?", (run_id,))
            if row is None:
                raise NotFound(f"run {run_id!r} does not exist")
            if RunState(row["state"]).finished:
                raise FailedPrecondition(f"run {run_id} already finished {row['state']}")
            unfinished = await self._fetchall(
                "SELECT step_id FROM steps WHERE run_id = ? AND state IN"
                " ('PENDING', 'RUNNING', 'WAITING_APPROVAL') ORDER BY position",
                (run_id,),
            )
            for step in unfinished:
                await db.execute(
                    "UPDATE steps SET state = 'CANCELLED', end_time = ?"
                    " WHERE run_id = ? AND step_id = ?",
                    (now, run_id, step["step_id"]),
                )
                await db.execute(
                    "UPDATE attempts SET state = 'CANCELLED', end_time = ?"
                    " WHERE run_id = ? AND step_id = ? AND state = 'RUNNING'",
                    (now, run_id, step["step_id"]),
                )
                await self._append_event(
                    db,
                    run_id,
                    EventType.STEP_CANCELLED,
                    f"{step['step_id']} cancelled",
                    step_id=step["step_id"],
                )
            await db.execute(
                "UPDATE runs SET state = ?, error = ?, end_time = ?,"
                " start_time = COALESCE(start_time, ?) WHERE run_id = ?",
                (state.value, error, now, now, run_id),
            )
            message = f"run {state.value.lower()}" + (f": {error}" if error else "")
            await self._append_event(
                db,
                run_id,
                RUN_TERMINAL_EVENT[state],
                message,
                attributes={"error": error} if error else {},
            )

    async def requeue_interrupted_steps(self, run_id: str) -> list[str]:
        now = _now()
        async with self._transaction() as db:
            rows = await self._fetchall(
                "SELECT step_id FROM steps WHERE run_id = ? AND state = 'RUNNING'"
                " ORDER BY position",
                (run_id,),
            )
            step_ids = [row["step_id"] for row in rows]
            for step_id in step_ids:
                await db.execute(
                    "UPDATE attempts SET state = 'LOST', end_time = ?,"
                    " error = 'scheduler restarted during the attempt'"
                    " WHERE run_id = ? AND step_id = ? AND state = 'RUNNING'",
                    (now, run_id, step_id),
                )
                await db.execute(
                    "UPDATE steps SET state = 'PENDING' WHERE run_id = ? AND step_id = ?",
                    (run_id, step_id),
                )
        return step_ids

    # -- reads --------------------------------------------------------------------------

    async def _run(self, row: Row) -> RunRecord:
        steps = await self._fetchall(
            "SELECT * FROM steps WHERE run_id = ? ORDER BY position", (row["run_id"],)
        )
        return run_from_row(row, tuple(step_from_row(step) for step in steps))

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._snapshot():
            row = await self._fetchone("SELECT * FROM runs WHERE run_id = ?", (run_id,))
            return None if row is None else await self._run(row)

    async def run_finished(self, run_id: str) -> bool:
        async with self._lock:
            row = await self._fetchone("SELECT state FROM runs WHERE run_id = ?", (run_id,))
            return row is not None and RunState(row["state"]).finished

    async def find_run_by_request_id(self, request_id: str) -> RunRecord | None:
        async with self._snapshot():
            row = await self._fetchone("SELECT * FROM runs WHERE request_id = ?", (request_id,))
            return None if row is None else await self._run(row)

    async def list_runs(
        self, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[RunRecord]:
        async with self._snapshot():
            if after is None:
                rows = await self._fetchall(
                    "SELECT * FROM runs ORDER BY create_time DESC, run_id DESC LIMIT ?", (limit,)
                )
            else:
                rows = await self._fetchall(
                    "SELECT * FROM runs WHERE (create_time, run_id) < (?, ?)"
                    " ORDER BY create_time DESC, run_id DESC LIMIT ?",
                    (after[0].isoformat(timespec="microseconds"), after[1], limit),
                )
            return [await self._run(row) for row in rows]

    async def unfinished_run_ids(self) -> list[str]:
        async with self._lock:
            rows = await self._fetchall(
                "SELECT run_id FROM runs WHERE state IN ('PENDING', 'RUNNING') ORDER BY create_time"
            )
            return [row["run_id"] for row in rows]

    async def events_after(
        self, run_id: str, after_sequence: int, limit: int = 500
    ) -> list[EventRecord]:
        async with self._lock:
            rows = await self._fetchall(
                "SELECT * FROM events WHERE run_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
                (run_id, after_sequence, limit),
            )
            return [event_from_row(row) for row in rows]

    async def list_artifacts(self, run_id: str) -> list[ArtifactRecord]:
        async with self._lock:
            rows = await self._fetchall(
                "SELECT run_id, path, step_id, size_bytes, sha256, create_time FROM artifacts"
                " WHERE run_id = ? ORDER BY path",
                (run_id,),
            )
            return [artifact_from_row(row, with_content=False) for row in rows]

    async def get_artifact(self, run_id: str, path: str) -> ArtifactRecord | None:
        async with self._lock:
            row = await self._fetchone(
                "SELECT * FROM artifacts WHERE run_id = ? AND path = ?", (run_id, path)
            )
            return None if row is None else artifact_from_row(row, with_content=True)

    async def step_outputs(self, run_id: str, step_ids: Sequence[str]) -> list[StepOutputRecord]:
        async with self._snapshot():
            outputs = []
            for step_id in step_ids:
                step = await self._fetchone(
                    "SELECT persona, summary FROM steps WHERE run_id = ? AND step_id = ?"
                    " AND state = 'SUCCEEDED'",
                    (run_id, step_id),
                )
                if step is None:
                    continue
                files = await self._fetchall(
                    "SELECT path, content FROM artifacts WHERE run_id = ? AND step_id = ?"
                    " ORDER BY path",
                    (run_id, step_id),
                )
                outputs.append(
                    StepOutputRecord(
                        step_id=step_id,
                        persona=step["persona"],
                        summary=step["summary"],
                        files=tuple((f["path"], bytes(f["content"])) for f in files),
                    )
                )
            return outputs

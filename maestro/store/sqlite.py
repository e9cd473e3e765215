"""The SQLite store: the SQL of runs, steps, attempts, events and artifacts.

One writer (the scheduler), many readers (the gateway, in another process), WAL mode:
readers see each commit at once. How the connection is used safely under asyncio
(locking, transactions, cancellation) is in sqlite_connection.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from maestro.core.errors import AlreadyExists, FailedPrecondition, Internal, NotFound
from maestro.store.base import RunFinished, Store
from maestro.store.models import (
    RUN_TERMINAL_EVENT,
    EventType,
    NewRun,
    RunState,
    StepResultRecord,
)
from maestro.store.schema import SCHEMA, SCHEMA_VERSION
from maestro.store.sqlite_connection import SqliteConnection
from maestro.store.sqlite_reads import SqliteReads

log = logging.getLogger(__name__)


def _now() -> str:
    # Fixed width (always microseconds), so text order is time order.
    return datetime.now(UTC).isoformat(timespec="microseconds")


class SqliteStore(SqliteReads, Store):
    """Run state in one SQLite file."""

    def __init__(self, connection: SqliteConnection) -> None:
        self._conn = connection

    @classmethod
    async def open(cls, path: str, *, writer: bool = False) -> SqliteStore:
        """Opens (and if needed creates) the database file with the schema.

        Args:
            path: the database file.
            writer: open it as the one writer: two schedulers driving the same runs
                from one file would record every step twice.

        Raises:
            FailedPrecondition: `writer` and another process writes the file, or the
                file's schema is of another version.
        """
        connection = await SqliteConnection.open(path, writer=writer)
        store = cls(connection)
        try:
            await store._create_schema()
        except BaseException:
            await connection.close()
            raise
        return store

    async def _create_schema(self) -> None:
        # CREATE ... IF NOT EXISTS is idempotent, so the scheduler and the gateway may
        # both open a new file at the same moment.
        await self._conn.executescript(SCHEMA)
        async with self._conn.transaction() as db:
            row = await self._conn.fetchone("SELECT version FROM schema_version")
            if row is None:
                await db.execute(
                    "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                )
            elif row["version"] != SCHEMA_VERSION:
                raise FailedPrecondition(
                    f"database schema version {row['version']} is not {SCHEMA_VERSION}"
                )

    async def close(self) -> None:
        await self._conn.close()

    async def check(self) -> None:
        if await self._conn.stuck_in_transaction():
            raise Internal("the store's connection is stuck inside a transaction")
        # A real read of the file; the writer also takes (and releases) the write lock,
        # so a database another process keeps locked shows as not ready.
        begin = "BEGIN IMMEDIATE" if self._conn.is_writer else "BEGIN DEFERRED"
        async with self._conn.transaction(begin):
            await self._conn.fetchone("SELECT version FROM schema_version")

    @asynccontextmanager
    async def _transaction(self, *, unfinished_run: str | None = None) -> AsyncIterator[Any]:
        """A write transaction.

        Args:
            unfinished_run: refuse the write (RunFinished) unless this run is still
                unfinished, so nothing is recorded after a run's terminal event.
        """
        async with self._conn.transaction() as db:
            if unfinished_run is not None:
                await self._require_unfinished(unfinished_run)
            yield db

    async def _require_unfinished(self, run_id: str) -> None:
        row = await self._conn.fetchone("SELECT state FROM runs WHERE run_id = ?", (run_id,))
        if row is None:
            raise NotFound(f"run {run_id!r} does not exist")
        if RunState(row["state"]).finished:
            raise RunFinished(f"run {run_id} already finished {row['state']}")

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
                existing = await self._conn.fetchone(
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
            row = await self._conn.fetchone(
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
            row = await self._conn.fetchone(
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
                previous = await self._conn.fetchone(
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
            row = await self._conn.fetchone("SELECT state FROM runs WHERE run_id = ?", (run_id,))
            if row is None:
                raise NotFound(f"run {run_id!r} does not exist")
            if RunState(row["state"]).finished:
                raise FailedPrecondition(f"run {run_id} already finished {row['state']}")
            unfinished = await self._conn.fetchall(
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
            rows = await self._conn.fetchall(
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

"""The store: run state in SQLite or PostgreSQL, behind one async interface.

Every method that changes a run takes the caller's lease and appends the matching
events in the same transaction: a state change is committed before anyone can hear of
it, an event never describes a change that did not happen, and a scheduler that lost
a run can no longer write for it. Readers (the gateway) open the store read-only.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from maestro.core.errors import InvalidArgument
from maestro.store import sql_approvals as approvals
from maestro.store import sql_reads as reads
from maestro.store import sql_rounds as rounds
from maestro.store import sql_writes as writes
from maestro.store.db import ChangeListener, Database, Dialect, EventListener
from maestro.store.errors import SchemaMismatch
from maestro.store.models import (
    ArtifactRecord,
    CancelRequest,
    Claim,
    CreatedRun,
    EventRecord,
    EventType,
    Lease,
    NewRun,
    RunHead,
    RunRecord,
    RunState,
    StepContextRecord,
    StepOutputRecord,
    StepResultRecord,
    Usage,
)
from maestro.store.postgres_db import PostgresDatabase
from maestro.store.schema_revision import SCHEMA_REVISION
from maestro.store.sqlite_db import SqliteDatabase

DEFAULT_LEASE_SECONDS = 15.0


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class Store:
    """Run state. Schedulers write (each for the runs it holds a lease on); the gateway
    and the command line read."""

    def __init__(self, db: Database, url: str) -> None:
        self.db = db
        self.url = url

    @property
    def dialect(self) -> Dialect:
        return self.db.dialect

    @property
    def shared(self) -> bool:
        """Whether several schedulers may share this database (PostgreSQL)."""
        return self.db.dialect is Dialect.POSTGRES

    def on_change(self, listener: ChangeListener) -> None:
        """Calls `listener({run_id: last_sequence})` after each commit that added events."""
        self.db.on_change(listener)

    def on_events(self, listener: EventListener) -> None:
        """Calls `listener(events)` with the events of each commit that added some."""
        self.db.on_events(listener)

    async def close(self) -> None:
        await self.db.close()

    async def check_schema(self) -> None:
        """Raises SchemaMismatch unless the database is at SCHEMA_REVISION."""
        revision = await self.db.read(reads.schema_revision)
        if revision == SCHEMA_REVISION:
            return
        where = redact_url(self.url)
        upgrade = f"`maestro db upgrade --database-url {where}`"
        if revision is None:
            tables = await self.db.read(reads.table_names)
            if "schema_version" in tables:
                raise SchemaMismatch(
                    f"the database at {where} was made by an earlier Maestro, before "
                    "migrations existed; move it aside (its runs cannot be upgraded) and "
                    f"create a new one with {upgrade}"
                )
            raise SchemaMismatch(f"the database at {where} has no Maestro schema; run {upgrade}")
        if revision.isdigit() and int(revision) < int(SCHEMA_REVISION):
            raise SchemaMismatch(
                f"the database at {where} is at schema {revision}, older than this "
                f"Maestro's {SCHEMA_REVISION}; run {upgrade}"
            )
        raise SchemaMismatch(
            f"the database at {where} is at schema {revision}, which this Maestro "
            f"(schema {SCHEMA_REVISION}) does not know: it was upgraded by a newer Maestro; "
            "run that version"
        )

    # -- schedulers and leases -------------------------------------------------------

    async def heartbeat_scheduler(self, scheduler_id: str) -> None:
        """A real write: the scheduler's readiness check."""
        await self.db.write(
            writes.heartbeat_scheduler, scheduler_id, socket.gethostname(), os.getpid()
        )

    async def create_run(
        self, new: NewRun, *, owner: str | None, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> CreatedRun:
        """Records a PENDING run with RUN_CREATED; claimed by `owner` in the same breath.

        Returns:
            The lease (None without an owner) and the run's record as stored.

        Raises:
            AlreadyExists: another run has this request_id.
        """
        return await self.db.write(writes.create_run, new, owner, lease_seconds, fail_fast=True)

    async def claim_runs(
        self,
        owner: str,
        *,
        limit: int,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        everything: bool = False,
    ) -> list[Claim]:
        """Takes unowned runs and runs whose owner's lease expired (oldest first)."""
        return await self.db.write(writes.claim_runs, owner, lease_seconds, limit, everything)

    async def renew_leases(
        self, owner: str, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> list[tuple[str, bool]]:
        """Extends the owner's leases; returns each run it still holds and whether a
        cancellation was requested for it."""
        return await self.db.write(writes.renew_leases, owner, lease_seconds)

    async def release_leases(self, owner: str, run_ids: Sequence[str]) -> int:
        return await self.db.write(writes.release_leases, owner, list(run_ids))

    async def request_cancel(self, run_id: str) -> CancelRequest:
        return await self.db.write(writes.request_cancel, run_id, fail_fast=True)

    async def delete_run(self, run_id: str) -> None:
        await self.db.write(writes.delete_run, run_id, fail_fast=True)

    # -- one run's lifecycle (under its lease) ---------------------------------------

    async def recover_run(self, lease: Lease, reason: str) -> list[str]:
        return await self.db.write(writes.recover_run, lease, reason)

    async def start_run(self, lease: Lease, note: str = "") -> None:
        await self.db.write(writes.start_run, lease, note)

    async def queue_run(self, lease: Lease, reason: str) -> None:
        await self.db.write(writes.queue_run, lease, reason)

    async def queue_step(self, lease: Lease, step_id: str, reason: str) -> None:
        await self.db.write(writes.queue_step, lease, step_id, reason)

    async def note_capacity(
        self,
        lease: Lease,
        type_: EventType,
        message: str,
        step_id: str = "",
        attributes: dict[str, str] | None = None,
    ) -> None:
        """Records a model capacity event (see sql_writes.note_capacity)."""
        await self.db.write(writes.note_capacity, lease, type_, message, step_id, attributes or {})

    async def start_dispatch(self, lease: Lease, step_id: str, provider: str) -> tuple[int, int]:
        """STEP_STARTED: a new attempt, or the lost one again. Returns (attempt, dispatch)."""
        return await self.db.write(writes.start_dispatch, lease, step_id, provider)

    async def start_dispatch_with_context(
        self,
        lease: Lease,
        step_id: str,
        provider: str,
        context_steps: Sequence[str],
        budget_bytes: int,
    ) -> tuple[int, int, list[StepContextRecord]]:
        """start_dispatch and step_context in one transaction (one trip to the database
        on the path from one step to the next)."""
        return await self.db.write(
            writes.start_dispatch_with_context,
            lease,
            step_id,
            provider,
            list(context_steps),
            budget_bytes,
        )

    async def record_progress(
        self,
        lease: Lease,
        step_id: str,
        attempt: int,
        dispatch: int,
        notes: Sequence[tuple[str, str]],
        usage: Usage | None,
    ) -> bool:
        return await self.db.write(
            writes.record_progress, lease, step_id, attempt, dispatch, list(notes), usage
        )

    async def complete_step(
        self,
        lease: Lease,
        step_id: str,
        attempt: int,
        dispatch: int,
        result: StepResultRecord,
        *,
        notes: Sequence[tuple[str, str]] = (),
    ) -> bool:
        """Records the result (after the progress `notes` still pending), once.

        Returns:
            False when this dispatch's outcome was already recorded.
        """
        return await self.db.write(
            writes.complete_step, lease, step_id, attempt, dispatch, result, list(notes)
        )

    async def lose_dispatch(
        self,
        lease: Lease,
        step_id: str,
        attempt: int,
        dispatch: int,
        reason: str,
        *,
        usage: Usage | None,
        retry_in: float,
        notes: Sequence[tuple[str, str]] = (),
    ) -> float | None:
        """ATTEMPT_LOST; the same attempt is due again `retry_in` seconds from now.

        Returns:
            The due time (seconds since the epoch), or None when already recorded.
        """
        return await self.db.write(
            writes.lose_dispatch,
            lease,
            step_id,
            attempt,
            dispatch,
            reason,
            usage,
            retry_in,
            list(notes),
        )

    async def fail_attempt(
        self,
        lease: Lease,
        step_id: str,
        attempt: int,
        dispatch: int,
        reason: str,
        *,
        usage: Usage | None,
        retry_in: float | None,
        block: Sequence[str] = (),
        notes: Sequence[tuple[str, str]] = (),
    ) -> float | None:
        """The work failed; retried `retry_in` seconds from now, or the step FAILS.

        Returns:
            The due time of the retry (seconds since the epoch); None otherwise.
        """
        return await self.db.write(
            writes.fail_attempt,
            lease,
            step_id,
            attempt,
            dispatch,
            reason,
            usage,
            retry_in,
            list(block),
            list(notes),
        )

    async def fail_step(
        self, lease: Lease, step_id: str, reason: str, block: Sequence[str] = ()
    ) -> None:
        await self.db.write(writes.fail_step, lease, step_id, reason, list(block))

    async def finish_run(self, lease: Lease, state: RunState, error: str) -> None:
        await self.db.write(writes.finish_run, lease, state, error)

    # -- approvals (sql_approvals) ---------------------------------------------------------

    async def wait_for_approval(
        self,
        lease: Lease,
        step_id: str,
        timeout_seconds: float,
        prompt: str,
        on_timeout: str,
        artifacts: Sequence[str],
    ) -> float:
        """APPROVAL_REQUESTED; returns when the wait times out (seconds since the epoch)."""
        return await self.db.write(
            approvals.wait_for_approval,
            lease,
            step_id,
            timeout_seconds,
            prompt,
            on_timeout,
            list(artifacts),
        )

    async def record_decision(
        self,
        run_id: str,
        step_id: str,
        decision: str,
        *,
        comment: str,
        decided_by: str,
        request_id: str,
    ) -> approvals.DecisionRecord:
        """A person's decision on a waiting step (idempotent per request_id)."""
        return await self.db.write(
            approvals.record_decision,
            run_id,
            step_id,
            decision,
            comment,
            decided_by,
            request_id,
            fail_fast=True,
        )

    async def get_decision(
        self, run_id: str, step_id: str, round_: int
    ) -> approvals.DecisionRecord | None:
        return await self.db.read(approvals.get_decision, run_id, step_id, round_)

    async def decide_on_timeout(
        self, lease: Lease, step_id: str, round_: int, decision: str
    ) -> approvals.DecisionRecord:
        return await self.db.write(approvals.decide_on_timeout, lease, step_id, round_, decision)

    async def settle_approval(
        self,
        lease: Lease,
        decision: approvals.DecisionRecord,
        rework: rounds.ReworkRequest | None,
        failure: str,
        block: Sequence[str] = (),
    ) -> bool:
        return await self.db.write(
            approvals.settle_approval, lease, decision, rework, failure, list(block)
        )

    # -- gates and rework rounds (sql_rounds) ---------------------------------------------

    async def record_gate(
        self,
        lease: Lease,
        step_id: str,
        attempt: int,
        dispatch: int,
        gate: rounds.GateRecord,
        block: Sequence[str] = (),
    ) -> bool:
        """GATE_EVALUATED and the gate's end: SUCCEEDED, a new round, or FAILED."""
        return await self.db.write(
            rounds.record_gate, lease, step_id, attempt, dispatch, gate, list(block)
        )

    async def complete_and_rework(
        self,
        lease: Lease,
        step_id: str,
        attempt: int,
        dispatch: int,
        result: StepResultRecord,
        *,
        notes: Sequence[tuple[str, str]] = (),
        rework: rounds.ReworkRequest | None,
        failure: str = "",
        block: Sequence[str] = (),
    ) -> bool:
        """A result that asks for changes: recorded, then a new round or the step FAILS."""
        return await self.db.write(
            rounds.complete_and_rework,
            lease,
            step_id,
            attempt,
            dispatch,
            result,
            list(notes),
            rework,
            failure,
            list(block),
        )

    # -- reads --------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self.db.read(reads.get_run, run_id)

    async def run_head(self, run_id: str) -> RunHead | None:
        """The run's state, last event sequence and creator (None: no such run),
        without reading its steps."""
        return await self.db.read(reads.run_head, run_id)

    async def run_progress(self, run_ids: Sequence[str]) -> dict[str, tuple[RunState, int]]:
        """(state, last event sequence) of each of these runs that exists."""
        return await self.db.read(reads.run_progress, list(run_ids))

    async def find_run_by_request_id(self, request_id: str) -> RunRecord | None:
        return await self.db.read(reads.find_run_by_request_id, request_id)

    async def list_runs(
        self,
        limit: int,
        after: tuple[datetime, str] | None = None,
        *,
        created_by: str | None = None,
        waiting_for_decision: bool = False,
    ) -> list[RunRecord]:
        """Runs newest first, after the (create time, run id) cursor."""
        return await self.db.read(reads.list_runs, limit, after, created_by, waiting_for_decision)

    async def unfinished_run_ids(self) -> list[str]:
        return await self.db.read(reads.unfinished_run_ids)

    async def events_after(
        self, run_id: str, after_sequence: int, limit: int = 500
    ) -> list[EventRecord]:
        return await self.db.read(reads.events_after, run_id, after_sequence, limit)

    async def list_artifacts(
        self,
        run_id: str,
        *,
        all_versions: bool = False,
        limit: int | None = None,
        after: str | None = None,
        after_version: int = 0,
    ) -> list[ArtifactRecord]:
        """Artifacts without content, by path: the latest version of each, or all; at
        most `limit`, after (`after`, `after_version`) (a page)."""
        return await self.db.read(
            reads.list_artifacts, run_id, all_versions, limit, after, after_version
        )

    async def expired_run_ids(self, finished_before: datetime, limit: int) -> list[str]:
        """Runs that finished before the given time, oldest first (for retention)."""
        return await self.db.read(reads.expired_run_ids, finished_before, limit)

    async def get_artifact(
        self, run_id: str, path: str, version: int | None = None
    ) -> ArtifactRecord | None:
        """One artifact with its content: the latest version, or the one asked for."""
        return await self.db.read(reads.get_artifact, run_id, path, version)

    async def step_outputs(self, run_id: str, step_ids: Sequence[str]) -> list[StepOutputRecord]:
        """Summaries and files of the given succeeded steps, in the order asked."""
        return await self.db.read(reads.step_outputs, run_id, list(step_ids))

    async def step_context(
        self, run_id: str, step_ids: Sequence[str], budget_bytes: int
    ) -> list[StepContextRecord]:
        """Summaries of the given succeeded steps (nearest first) with the files that fit
        `budget_bytes`; the rest are named as omitted."""
        return await self.db.read(reads.step_context, run_id, list(step_ids), budget_bytes)

    async def owned_paths(self, run_id: str) -> dict[str, str]:
        """path -> the step that wrote its latest version."""
        return await self.db.read(reads.owned_paths, run_id)


async def open_store(url: str, *, writer: bool = False, check_schema: bool = True) -> Store:
    """Opens the store a database URL names.

    Args:
        url: `sqlite:///PATH` or `postgresql://USER@HOST:PORT/DB`.
        writer: open it for writing (schedulers, migrations); readers pass False.
        check_schema: refuse a database at another schema revision (SchemaMismatch).

    Raises:
        InvalidArgument: the URL names no supported database.
        SchemaMismatch: the database needs `maestro db upgrade` (or a newer Maestro).
        StoreUnavailable: the database cannot be reached.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    db: Database
    if scheme == "sqlite":
        path = url.removeprefix("sqlite:///")
        if not path or path == url:
            raise InvalidArgument("database", f"{url!r} is not sqlite:///PATH")
        db = SqliteDatabase(path, writer=writer)
    elif scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        db = PostgresDatabase(url.replace("postgres://", "postgresql://", 1), writer=writer)
    else:
        raise InvalidArgument(
            "database",
            f"unsupported database URL {redact_url(url)!r}; use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB",
        )
    store = Store(db, url)
    if check_schema:
        try:
            await store.check_schema()
        except BaseException:
            await store.close()
            raise
    return store

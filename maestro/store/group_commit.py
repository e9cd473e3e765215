"""Group commit: one thread commits the write transactions that arrive together.

Concurrent steps of many runs all write; committing each on its own costs a thread
hop, a lock round, and (on PostgreSQL) a WAL flush apiece. The writer thread takes
every transaction waiting in its queue, runs them one after another in one database
transaction, and commits once. A failing transaction fails alone: the group is rolled
back and the others run again without it (transactions are functions of the database
and their arguments, so running one again is safe; none runs more than three times). A
failing commit fails the whole group, each job with the mapped error. Results go
back to the event loop in one hand-off per group.

On PostgreSQL every statement would be a round trip. A group runs in the driver's
pipeline mode instead: writes go out without waiting, and the server is waited for only
when a transaction reads, and once for the commit. Should a statement fail, which
transaction sent it is not known; the group is rolled back and runs again carefully,
each transaction waited for before the next starts, so that the error goes to the one
that caused it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

from maestro.store.db import (
    MAX_GROUP,
    Dialect,
    Pipelined,
    StoreUnavailable,
    Tx,
    map_error,
    now_us,
)
from maestro.store.models import EventRecord

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


Outcome = tuple[_Job, Any, BaseException | None]
Split = tuple[list[_Job], Outcome | None, list[_Job]]


@dataclass(frozen=True)
class Pipelining:
    """How the driver sends statements without waiting for each (psycopg's pipeline
    mode), for `GroupWriter`."""

    enter: Callable[[Any], AbstractContextManager[Any]]
    """Puts the connection in pipeline mode; leaving waits for everything sent."""
    send_sync: Callable[[Any, Any], None]
    """Sends a Sync on (connection, pipeline) without waiting for it (see
    `Pipelined.sent`)."""
    nothing_committed: Callable[[Any, Any], bool]
    """After an error: given the connection and the cursor that sent COMMIT, whether
    the transaction surely did not commit (COMMIT was skipped, failed or rolled back,
    and the connection is sound)."""
    statement_failed: Callable[[Any], bool]
    """Whether the connection's open transaction is marked failed (one of its
    statements failed)."""
    committed: Callable[[Any], bool]
    """Whether the cursor that sent COMMIT got its answer that the transaction
    committed."""

    def for_tx(self, conn: Any, pipeline: Any) -> Pipelined:
        return Pipelined(sync=pipeline.sync, sent=lambda: self.send_sync(conn, pipeline))


@dataclass
class _Done:
    """What the jobs of a group that ran so far returned and announced."""

    outcomes: list[Outcome] = field(default_factory=list)
    changed: dict[str, int] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)

    def add(self, job: _Job, result: Any, tx: Tx) -> None:
        self.outcomes.append((job, result, None))
        for run_id, sequence in tx.changed_runs.items():
            self.changed[run_id] = max(sequence, self.changed.get(run_id, 0))
        self.events += tx.appended


Settled = Callable[[list[Outcome], dict[str, int], list[EventRecord]], None]


class GroupWriter:
    """The writer thread of one database connection.

    Args:
        connect: opens the writer's connection (called on the writer thread, again after
            the connection broke).
        dialect: the connection's SQL dialect.
        begin: the statement that opens a write transaction.
        errors: the driver's exception base class(es).
        on_settled: called on the event loop with each group's outcomes and the runs
            whose events it appended.
        pipeline: how to send statements without waiting for each (PostgreSQL); None
            where every statement waits anyway (SQLite).
    """

    def __init__(
        self,
        *,
        name: str,
        connect: Callable[[], Any],
        dialect: Dialect,
        begin: str,
        errors: tuple[type[BaseException], ...],
        on_settled: Settled,
        pipeline: Pipelining | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._connect = connect
        self._dialect = dialect
        self._begin = begin
        self._errors = errors
        self._on_settled = on_settled
        self._pipeline = pipeline
        self._conn: Any = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put(_Job(fn, args, future))
        return future

    async def close(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)

    def _loop_forever(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                group = [job]
                stop = False
                while len(group) < MAX_GROUP:
                    try:
                        nxt = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
                self._run_group(group)
                if stop:
                    break
        finally:
            self._drop_connection()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except self._errors:
                log.debug("closing the writer's connection failed", exc_info=True)
            self._conn = None

    def _run_group(self, group: list[_Job]) -> None:
        # In submission order: the jobs before a failed one run again and commit, then
        # the failed one hears its error, then the ones after it run as a group of their
        # own. Each job runs at most twice carefully, however many of its group fail,
        # and at most once more pipelined; and a caller that reads after its error (a
        # retried request looking for the run an earlier job of its group made) finds
        # what the earlier jobs wrote.
        pending: list[tuple[list[_Job], bool] | Outcome] = [(group, self._pipeline is not None)]
        while pending:
            item = pending.pop()
            if isinstance(item[0], _Job):
                self._settle([item], {}, [])
                continue
            jobs, pipelined = item
            split = self._try_pipelined(jobs) if pipelined else self._try_group(jobs)
            if split is None:  # a database error no job can be told to own
                pending.append((jobs, False))
                continue
            before, failed, after = split
            if after:
                # Not run yet: pipelined again if this pass was (each job is at most
                # once in a pipelined pass).
                pending.append((after, pipelined))
            if failed is not None:
                pending.append(failed)
            if before:
                pending.append((before, False))

    def _begin_group(self, group: list[_Job], *, begin: bool = True) -> Any:
        """The connection, in a new transaction unless `begin` is False; None when that
        failed (the group was told so)."""
        try:
            if self._conn is None:
                self._conn = self._connect()
            if begin:
                self._conn.execute(self._begin)
        except self._errors as err:
            self._drop_connection()
            self._settle([(job, None, err) for job in group], {}, [])
            return None
        return self._conn

    def _try_group(self, group: list[_Job]) -> Split:
        """Runs the jobs in one transaction and commits them together, carefully: on
        PostgreSQL each job's statements are waited for before the next job starts, so
        every error belongs to the job that raised it.

        No SAVEPOINT per job: on PostgreSQL a savepoint and its release are two round
        trips for every transaction. When a job fails, the transaction is rolled back
        and that job alone gets its error.

        Returns:
            The jobs before the failed job (rolled back with it, to run again), the
            failed job's outcome (to deliver once they committed), and the jobs after
            it (not run yet); empty and None when the group ended.
        """
        conn = self._begin_group(group)
        if conn is None:
            return [], None, []
        done = _Done()
        failed: tuple[int, BaseException] | None = None
        try:
            # One pipeline for the group, waited for after each job: leaving a pipeline
            # sends a Flush after its Sync, and a Flush stops the server's
            # idle-in-transaction timeout until the next Sync.
            with self._pipelined(conn) as pipeline:
                for index, job in enumerate(group):
                    tx = Tx(conn.cursor(), self._dialect, now_us())
                    if self._pipeline is not None:
                        tx.pipeline = self._pipeline.for_tx(conn, pipeline)
                    try:
                        result = job.fn(tx, *job.args)
                        if pipeline is not None:
                            pipeline.sync()  # this job's errors are raised as this job's
                    except BaseException as err:  # noqa: BLE001 - delivered to the job's caller
                        failed = (index, err)
                        break
                    finally:
                        tx.cursor.close()
                    done.add(job, result, tx)
        except self._errors as err:
            # Leaving the pipeline after a job's refusal ran what it had sent: an error
            # of those statements is that job's too. (With every job waited for, any
            # other error here is the connection's: the last job hears it, the others
            # run again.)
            if failed is None:
                failed = (len(group) - 1, err)
        if failed is not None:
            index, error = failed
            self._undo(error)
            return group[:index], (group[index], None, error), group[index + 1 :]
        try:
            conn.execute("COMMIT")
        except self._errors as err:
            self._fail_group(group, err)
            return [], None, []
        self._settle(done.outcomes, done.changed, done.events)
        return [], None, []

    def _try_pipelined(self, group: list[_Job]) -> Split | None:
        """Runs the jobs in one transaction as one pipeline (PostgreSQL): the server is
        waited for only when a job reads, and once for the commit.

        A job that refuses (raises an error of its own, not the database's) is told
        apart as in `_try_group`, once the statements before its refusal are known to
        have succeeded.

        Returns:
            As `_try_group`; None when a statement failed and nothing was committed,
            but which job's it was cannot be told (the jobs were not waited for one by
            one): the group is to run again carefully.
        """
        assert self._pipeline is not None
        conn = self._begin_group(group, begin=False)
        if conn is None:
            return [], None, []
        done = _Done()
        refused: tuple[int, BaseException] | None = None
        commit: Any = None
        try:
            with self._pipeline.enter(conn) as pipeline:
                pipelined = self._pipeline.for_tx(conn, pipeline)
                conn.execute(self._begin)  # in the first job's round trip
                pipelined.sent()
                for index, job in enumerate(group):
                    tx = Tx(conn.cursor(), self._dialect, now_us(), pipeline=pipelined)
                    try:
                        result = job.fn(tx, *job.args)
                    except self._errors:
                        raise
                    except BaseException as err:  # noqa: BLE001 - the job's own refusal
                        pipeline.sync()  # raises if a statement before it failed
                        refused = (index, err)
                        break
                    finally:
                        tx.cursor.close()
                    done.add(job, result, tx)
                else:
                    commit = conn.execute("COMMIT")
                # Leaving the pipeline waits for everything sent.
        except self._errors as err:
            if commit is None or self._pipeline.nothing_committed(conn, commit):
                # A statement failed (whose is not known) or the COMMIT did: nothing was
                # committed. Roll back and run the jobs again carefully.
                self._undo(err)
                return None
            if not self._pipeline.committed(commit):
                self._fail_group(group, err)  # the connection broke: committed or not
                return [], None, []
            # The COMMIT's answer came, then the session ended: the group is stored.
            self._drop_connection()
        if refused is not None:
            index, refusal = refused
            self._undo(refusal)
            return group[:index], (group[index], None, refusal), group[index + 1 :]
        self._settle(done.outcomes, done.changed, done.events)
        return [], None, []

    def _pipelined(self, conn: Any) -> AbstractContextManager[Any]:
        return nullcontext() if self._pipeline is None else self._pipeline.enter(conn)

    def _undo(self, err: BaseException) -> None:
        """Rolls the transaction back after one of its jobs raised `err`."""
        # Pipelined, after a failed statement the server refuses the statements sent
        # after it, their Parse included; psycopg takes a statement it sends for the
        # sixth time as prepared without reading whether the Parse went through, so the
        # connection may now name prepared statements the server does not have.
        refused_statements = self._pipeline is not None and (
            isinstance(err, self._errors) or self._pipeline.statement_failed(self._conn)
        )
        try:
            self._conn.execute("ROLLBACK")
        except self._errors:
            # The transaction is in an unknown state (SQLite may already have rolled it
            # back after a full disk or an I/O error): closing the connection ends it,
            # and the other jobs run on a new one.
            log.debug("rollback after a failed transaction failed", exc_info=True)
            self._drop_connection()
        if refused_statements or isinstance(map_error(err), StoreUnavailable):
            # Or a statement met an outage (an I/O error, a read-only file, a lost
            # session): the connection may keep failing after the outage ends (SQLite
            # stays read-only after an I/O error mid-write). The next group connects
            # afresh.
            self._drop_connection()

    def _fail_group(self, group: list[_Job], err: BaseException) -> None:
        """The commit failed: every job of the group fails with its mapped error."""
        try:
            self._conn.execute("ROLLBACK")
        except self._errors:
            log.debug("rollback after a failed group failed too", exc_info=True)
        # After an I/O error a connection may keep failing (SQLite's view of its WAL,
        # a PostgreSQL session in an unknown state): the next group connects afresh.
        self._drop_connection()
        failure = map_error(err)
        self._settle([(job, None, failure) for job in group], {}, [])

    def _settle(
        self, outcomes: list[Outcome], changed: dict[str, int], events: list[EventRecord]
    ) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, outcomes, changed, events)
        except RuntimeError:
            log.debug("the event loop closed before a group's results were delivered")

    def _deliver(
        self, outcomes: list[Outcome], changed: dict[str, int], events: list[EventRecord]
    ) -> None:
        for job, result, err in outcomes:
            if job.future.done():
                continue
            if err is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(map_error(err))
        self._on_settled(outcomes, changed, events)

"""Runs store transactions on database threads: one thread hop per transaction.

The store's SQL lives in plain functions `fn(tx, *args)` that run whole on a thread
that owns a connection, so a transaction of twenty statements costs the event loop one
hand-off and one wake-up, not forty (aiosqlite made each statement and each fetch a
cross-thread job; that was most of a step's scheduler CPU).

- SQLite: one writer thread (the file has one writer anyway) that commits *groups* of
  concurrent transactions together, each inside its own SAVEPOINT so one failing
  transaction never takes the others with it; reader threads with their own
  connections in WAL mode never wait for the writer.
- PostgreSQL: a few threads, each with its own connection (psycopg 3); every
  transaction is its own, and `NOTIFY` inside it is delivered on commit.

Both speak the same SQL text (qmark placeholders, translated once for psycopg). Errors
of the database are mapped here, once: busy, locked, unreachable or full is
StoreUnavailable (retry later); anything else is a bug (Internal).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, TypeVar

from maestro.core.errors import FailedPrecondition, Internal, MaestroError, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Outcome = tuple["_Job", Any, BaseException | None]
Row = Any
"""A result row: indexable by column name (sqlite3.Row, or a dict from psycopg)."""

# Longest a statement waits for another transaction's lock before the store says it
# is unavailable: a caller gets UNAVAILABLE within a second, never a hang, and the run
# loop retries with backoff instead of holding the writer.
LOCK_WAIT_SECONDS = 0.5
MAX_GROUP = 64


class StoreUnavailable(Unavailable):
    """The database is busy, locked, unreachable or full; worth retrying later."""


class Dialect(StrEnum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"


def now_us() -> int:
    """Now, in whole microseconds since the epoch (how the store keeps time)."""
    return time.time_ns() // 1000


def to_us(seconds: float) -> int:
    """Seconds since the epoch (time.time()) as the store keeps them."""
    return round(seconds * 1_000_000)


@functools.cache
def _postgres_sql(sql: str) -> str:
    # psycopg takes %s placeholders; our SQL never holds a literal '?' or '%'.
    return sql.replace("?", "%s")


@dataclass
class Tx:
    """What a transaction function gets: portable SQL on one connection, one time."""

    cursor: Any
    dialect: Dialect
    now: int
    """The transaction's time in microseconds since the epoch: one value for all its rows."""
    changed_runs: dict[str, int] = field(default_factory=dict)
    """Runs whose event log grew, with their last sequence (announced after commit)."""

    def later(self, seconds: float) -> int:
        """The time `seconds` after this transaction's, as stored."""
        return self.now + round(seconds * 1_000_000)

    def _sql(self, sql: str) -> str:
        return sql if self.dialect is Dialect.SQLITE else _postgres_sql(sql)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Runs a statement; returns the number of rows it changed."""
        self.cursor.execute(self._sql(sql), params)
        return int(self.cursor.rowcount)

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.cursor.executemany(self._sql(sql), list(rows))

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self.cursor.execute(self._sql(sql), params)
        return self.cursor.fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.cursor.execute(self._sql(sql), params)
        return list(self.cursor.fetchall())

    @property
    def for_update(self) -> str:
        """Row locking for a SELECT (SQLite locks the whole file instead)."""
        return " FOR UPDATE" if self.dialect is Dialect.POSTGRES else ""

    def announce(self, run_id: str, last_sequence: int) -> None:
        """Says, once committed, that the run's events now end at `last_sequence`."""
        self.changed_runs[run_id] = max(last_sequence, self.changed_runs.get(run_id, 0))
        if self.dialect is Dialect.POSTGRES:
            # Delivered to LISTENers when (and only if) this transaction commits.
            self.cursor.execute(
                "SELECT pg_notify('maestro_events', %s)", (f"{run_id}:{last_sequence}",)
            )


ChangeListener = Callable[[dict[str, int]], None]


def map_error(err: BaseException) -> BaseException:
    """The store's error for a database error (others are returned unchanged)."""
    if isinstance(err, MaestroError):
        return err
    if isinstance(err, sqlite3.OperationalError):
        # Locked, busy, I/O, full, read-only, cannot open: the file, not our SQL.
        return StoreUnavailable(f"the database is unavailable: {err}")
    if isinstance(err, sqlite3.DatabaseError):
        return Internal(f"database error: {type(err).__name__}: {err}")
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return err
    if isinstance(err, psycopg.OperationalError):
        # Connection lost or refused, lock or statement timeout, admin shutdown,
        # read-only transaction, disk full: all of them pass.
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return StoreUnavailable(f"the database is unavailable: {text}")
    if isinstance(err, psycopg.errors.ReadOnlySqlTransaction | psycopg.errors.DiskFull):
        return StoreUnavailable(f"the database refuses writes: {err}")
    if isinstance(err, psycopg.Error):
        return Internal(f"database error: {type(err).__name__}: {err}")
    return err


class Database:
    """Where transactions run. Subclasses own the threads and connections."""

    dialect: Dialect

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []
        self.outage: StoreUnavailable | None = None
        """The last write failure, until a write succeeds again."""

    def on_change(self, listener: ChangeListener) -> None:
        """Calls `listener` on the event loop after each commit that appended events."""
        self._listeners.append(listener)

    def _announce(self, changed: dict[str, int]) -> None:
        for listener in self._listeners:
            listener(changed)

    async def write(self, fn: Callable[..., T], *args: Any, fail_fast: bool = False) -> T:
        """Runs `fn(tx, *args)` in a write transaction, all or nothing.

        A caller that is cancelled while waiting does not cancel the transaction: it
        commits or rolls back whole, whatever happens to the caller.

        Args:
            fail_fast: refuse at once while the last write failed for unavailability
                (a caller's request must not wait out a lock that will not go away
                soon); retried work and probes leave it False, and their success ends
                the outage.

        Raises:
            StoreUnavailable: the database is busy, locked, unreachable or full.
        """
        if fail_fast and self.outage is not None:
            raise StoreUnavailable(f"{self.outage.message} (not waiting for it; try again)")
        future: asyncio.Future[T] = self._submit(fn, args)
        future.add_done_callback(self._observe)
        # Shielded: the transaction runs whole whether or not the caller still waits.
        return await asyncio.shield(future)

    def _observe(self, future: asyncio.Future[Any]) -> None:
        # Also retrieves the exception of a write whose caller stopped waiting.
        if future.cancelled():
            return
        err = future.exception()
        if err is None:
            self.outage = None
        elif isinstance(err, StoreUnavailable):
            self.outage = err

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        """Starts the write transaction; its future resolves on the event loop."""
        raise NotImplementedError

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(tx, *args)` on one consistent snapshot."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


# -- SQLite -----------------------------------------------------------------------------


def _sqlite_connect(path: str, *, query_only: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=LOCK_WAIT_SECONDS
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if query_only:
        conn.execute("PRAGMA query_only=ON")
    return conn


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


def _take_writer_lock(path: str) -> IO[bytes]:
    lock_file = open(f"{path}.writer-lock", "ab")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise FailedPrecondition(
            f"another scheduler is already writing {path}; a SQLite file has one writer "
            "(use PostgreSQL to run several schedulers)"
        ) from None
    return lock_file


class SqliteDatabase(Database):
    """One SQLite file: a group-committing writer thread and reader threads.

    The writer holds an exclusive lock on the file for its lifetime: two schedulers
    driving the same runs from one file would record every step twice.
    """

    dialect = Dialect.SQLITE

    def __init__(self, path: str, *, writer: bool, readers: int = 2) -> None:
        super().__init__()
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._writer_lock = _take_writer_lock(path) if writer else None
        self._loop = asyncio.get_running_loop()
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-read")
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        if writer:
            try:
                self._writer_conn = _sqlite_connect(path, query_only=False)
            except sqlite3.Error as err:
                self._release_writer_lock()
                raise map_error(err) from err
            self._writer = threading.Thread(
                target=self._write_loop, name="sqlite-write", daemon=True
            )
            self._writer.start()

    # writes

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        if self._writer is None:
            raise Internal("this store was opened read-only")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put(_Job(fn, args, future))
        return future

    def _write_loop(self) -> None:
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
        self._writer_conn.close()

    def _run_group(self, group: list[_Job]) -> None:
        conn = self._writer_conn
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        changed: dict[str, int] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            failure = map_error(err)
            failed: list[Outcome] = [(job, None, failure) for job in group]
            self._loop.call_soon_threadsafe(self._settle, failed, {})
            return
        single = len(group) == 1
        for job in group:
            tx = Tx(conn.cursor(), Dialect.SQLITE, now_us())
            try:
                if not single:
                    conn.execute("SAVEPOINT job")
                result = job.fn(tx, *job.args)
                if not single:
                    conn.execute("RELEASE job")
                outcomes.append((job, result, None))
                for run_id, seq in tx.changed_runs.items():
                    changed[run_id] = max(seq, changed.get(run_id, 0))
            except BaseException as err:  # noqa: BLE001 - delivered to the job's caller
                if single:
                    outcomes.append((job, None, err))
                    break
                try:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                except sqlite3.Error as undo:
                    # The savepoint is gone (the whole transaction failed): stop here.
                    outcomes.append((job, None, err))
                    self._fail_rest(conn, group, outcomes, undo)
                    return
                outcomes.append((job, None, err))
            finally:
                tx.cursor.close()
        try:
            if single and outcomes[0][2] is not None:
                conn.execute("ROLLBACK")
                changed = {}
            else:
                conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._fail_rest(conn, group, [], err)
            return
        self._loop.call_soon_threadsafe(self._settle, outcomes, changed)

    def _fail_rest(
        self,
        conn: sqlite3.Connection,
        group: list[_Job],
        outcomes: list[tuple[_Job, Any, BaseException | None]],
        err: BaseException,
    ) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed after %s", err)
        failure = map_error(err)
        settled = {id(job) for job, _, _ in outcomes}
        rest: list[Outcome] = [(job, None, failure) for job in group if id(job) not in settled]
        # Jobs that had succeeded before the failure were rolled back with it.
        undone: list[Outcome] = [(job, None, failure) for job, _, e in outcomes if e is None]
        failed: list[Outcome] = [(job, r, e) for job, r, e in outcomes if e is not None]
        self._loop.call_soon_threadsafe(self._settle, failed + undone + rest, {})

    def _settle(
        self, outcomes: list[tuple[_Job, Any, BaseException | None]], changed: dict[str, int]
    ) -> None:
        for job, result, err in outcomes:
            if job.future.done():
                continue
            if err is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(map_error(err))
        if changed:
            self._announce(changed)

    # reads

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _sqlite_connect(self.path, query_only=True)
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    def _read_now(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = self._reader()
        cursor = conn.cursor()
        try:
            conn.execute("BEGIN")
            try:
                return fn(Tx(cursor, Dialect.SQLITE, now_us()), *args)
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as err:
            raise map_error(err) from err
        finally:
            cursor.close()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._loop.run_in_executor(self._readers, self._read_now, fn, args)

    def _release_writer_lock(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.close()  # closing the file releases the flock
            self._writer_lock = None

    async def close(self) -> None:
        if self._writer is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        self._release_writer_lock()
        self._readers.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()


# -- PostgreSQL -------------------------------------------------------------------------


def postgres_conninfo(url: str) -> str:
    """psycopg's conninfo for a `postgresql://` URL (a `+psycopg` driver suffix is dropped)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class PostgresDatabase(Database):
    """A PostgreSQL database through a few threads, each with its own connection."""

    dialect = Dialect.POSTGRES

    def __init__(self, url: str, *, connections: int = 4, application: str = "maestro") -> None:
        super().__init__()
        self.url = url
        self._conninfo = postgres_conninfo(url)
        self._application = application
        self._loop = asyncio.get_running_loop()
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(connections, thread_name_prefix="postgres")

    def _connection(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        lock_ms = round(LOCK_WAIT_SECONDS * 1000)
        conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=3,
            application_name=self._application,
            # A process paused inside a transaction (SIGSTOP, a long GC) must not hold
            # its row locks for ever: the server ends such a session, and with it the
            # locks that would keep other schedulers from taking its runs over.
            options=(
                f"-c lock_timeout={lock_ms} -c statement_timeout=10000"
                " -c idle_in_transaction_session_timeout=3000"
            ),
        )
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], write: bool) -> tuple[T, Tx]:
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cursor:
                if not write:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                tx = Tx(cursor, Dialect.POSTGRES, now_us())
                return fn(tx, *args), tx
        except BaseException as err:
            conn = getattr(self._local, "conn", None)
            if conn is not None and conn.broken:
                conn.close()
            raise map_error(err) from err

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        done: asyncio.Future[T] = self._loop.create_future()

        def settle(ran: asyncio.Future[tuple[T, Tx]]) -> None:
            if ran.cancelled():
                done.cancel()
            elif (err := ran.exception()) is not None:
                done.set_exception(err)
            else:
                result, tx = ran.result()
                done.set_result(result)
                if tx.changed_runs:
                    self._announce(tx.changed_runs)

        self._loop.run_in_executor(self._pool, self._run, fn, args, True).add_done_callback(settle)
        return done

    def _read_now(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return self._run(fn, args, False)[0]
        except StoreUnavailable:
            conn = getattr(self._local, "conn", None)
            if conn is not None and not conn.closed:
                raise
            # The connection was dropped (a server restart, an administrator): a read is
            # safe to repeat once on a new one.
            return self._run(fn, args, False)[0]

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._loop.run_in_executor(self._pool, self._read_now, fn, args)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, True)
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

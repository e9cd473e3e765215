"""Runs store transactions on database threads: one thread hop per transaction.

The store's SQL lives in plain functions `fn(tx, *args)` that run whole on a thread
that owns a connection, so a transaction of twenty statements costs the event loop one
hand-off and one wake-up, not forty (aiosqlite made each statement and each fetch a
cross-thread job; that was most of a step's scheduler CPU).

Writes go to one writer thread per process that commits *groups* of concurrent
transactions together; one failing transaction never takes the others with it
(maestro/store/group_commit.py). Reads run on reader threads
with their own connections. The backends are sqlite_db.py and postgres_db.py; both
speak the same SQL text (qmark placeholders, translated once for psycopg).

Errors of the database are mapped here, once: busy, locked, unreachable, full or
read-only is StoreUnavailable (retry later); anything else is a bug (Internal).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from maestro.core.errors import Internal, MaestroError, Unavailable
from maestro.store.models import EventRecord

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = Any
"""A result row: indexable by column name (sqlite3.Row, or a dict from psycopg)."""
Query = tuple[str, Sequence[Any]]
"""A statement and its parameters."""

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


def _postgres_tuple_rows() -> Any:
    # Imported here: psycopg is loaded only by processes that use PostgreSQL.
    from psycopg.rows import tuple_row

    return tuple_row


@dataclass(frozen=True)
class Pipelined:
    """How a transaction uses its connection's pipeline (PostgreSQL's writer)."""

    sync: Callable[[], None]
    """Waits for everything sent so far."""
    sent: Callable[[], None]
    """Called after each statement: sends a Sync for it without waiting. The server
    starts `idle_in_transaction_session_timeout` only at a Sync, so without one a writer
    paused between two statements (SIGSTOP, a long GC) would hold its row locks for ever;
    with one it is ended after the timeout, as when every statement waited."""


@dataclass
class Tx:
    """What a transaction function gets: portable SQL on one connection, one time."""

    cursor: Any
    dialect: Dialect
    now: int
    """The transaction's time in microseconds since the epoch: one value for all its rows."""
    changed_runs: dict[str, int] = field(default_factory=dict)
    """Runs whose event log grew, with their last sequence (announced after commit)."""
    appended: list[EventRecord] = field(default_factory=list)
    """The events this transaction appended (handed to event listeners after commit)."""
    pipeline: Pipelined | None = None
    """PostgreSQL's writer: statements are sent without waiting for the server (None
    where each statement waits for its result)."""

    def later(self, seconds: float) -> int:
        """The time `seconds` after this transaction's, as stored."""
        return self.now + round(seconds * 1_000_000)

    def _sql(self, sql: str) -> str:
        return sql if self.dialect is Dialect.SQLITE else _postgres_sql(sql)

    def _send(self, cursor: Any, sql: str, params: Sequence[Any]) -> None:
        cursor.execute(self._sql(sql), params)
        if self.pipeline is not None:
            self.pipeline.sent()

    def _cursor_to_read(self) -> Any:
        # Pipelined, the shared cursor may still wait for an earlier statement's result,
        # which could then be taken for this one's: a read gets a cursor of its own.
        return self.cursor if self.pipeline is None else self.cursor.connection.cursor()

    def wait_for(self, cursor: Any) -> None:
        """Pipelined: waits until `cursor`'s result is in, by a Sync. (psycopg's fetch
        would send a Flush, and a Flush after a Sync stops the server's
        idle-in-transaction timeout until the next Sync.)"""
        if self.pipeline is not None and cursor.pgresult is None:
            self.pipeline.sync()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Runs a statement whose outcome is not read.

        On PostgreSQL's writer it is sent without waiting for the server: its error, if
        any, is raised by a later read or at the transaction's end, which the writer
        tells apart (maestro/store/group_commit.py).
        """
        self._send(self.cursor, sql, params)

    def changed(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Runs a statement and waits for it; returns the number of rows it changed."""
        self._send(self.cursor, sql, params)
        if self.pipeline is not None:
            self.pipeline.sync()
        return int(self.cursor.rowcount)

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.cursor.executemany(self._sql(sql), list(rows))
        if self.pipeline is not None:
            self.pipeline.sent()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        cursor = self._cursor_to_read()
        self._send(cursor, sql, params)
        self.wait_for(cursor)
        return cursor.fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self._cursor_to_read()
        self._send(cursor, sql, params)
        self.wait_for(cursor)
        return list(cursor.fetchall())

    def query(self, sql: str, params: Sequence[Any] = ()) -> Pending:
        """Sends a query whose rows are read later, on a cursor of its own.

        On PostgreSQL's writer the server is not waited for until the rows are read, so
        the queries a transaction sends before reading any of them share one round trip.
        Elsewhere the rows are read at once, before anything else runs.
        """
        cursor = self.cursor.connection.cursor()
        self._send(cursor, sql, params)
        pending = Pending(cursor, self)
        if self.pipeline is None:
            pending.all()
        return pending

    def values(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows as plain tuples in the SELECT's column order, for reads of many rows:
        sqlite3.Row finds a column by comparing names one by one, which was most of the
        cost of reading a 1,000-step run back."""
        cursor = self._cursor_to_read()
        named = cursor.row_factory
        cursor.row_factory = None if self.dialect is Dialect.SQLITE else _postgres_tuple_rows()
        try:
            self._send(cursor, sql, params)
            self.wait_for(cursor)
            return list(cursor.fetchall())
        finally:
            cursor.row_factory = named

    @property
    def for_update(self) -> str:
        """Row locking for a SELECT (SQLite locks the whole file instead)."""
        return " FOR UPDATE" if self.dialect is Dialect.POSTGRES else ""

    def announce(self, run_id: str, last_sequence: int) -> None:
        """Says, once committed, that the run's events now end at `last_sequence`."""
        self.changed_runs[run_id] = max(last_sequence, self.changed_runs.get(run_id, 0))
        if self.dialect is Dialect.POSTGRES:
            # Delivered to LISTENers when (and only if) this transaction commits.
            self.execute("SELECT pg_notify('maestro_events', ?)", (f"{run_id}:{last_sequence}",))

    def move_last_sequence(self, run_id: str, last_sequence: int) -> None:
        """Stores that the run's events now end at `last_sequence`, and announces it."""
        self.changed_runs[run_id] = max(last_sequence, self.changed_runs.get(run_id, 0))
        if self.dialect is Dialect.POSTGRES:
            # One statement, one round trip: the UPDATE in a WITH runs whole whether or
            # not the notify reads it.
            self.execute(
                "WITH moved AS (UPDATE runs SET last_sequence = ? WHERE run_id = ?)"
                " SELECT pg_notify('maestro_events', ?)",
                (last_sequence, run_id, f"{run_id}:{last_sequence}"),
            )
        else:
            self.execute(
                "UPDATE runs SET last_sequence = ? WHERE run_id = ?", (last_sequence, run_id)
            )


class Pending:
    """A query's rows, read when asked for (from `Tx.query`)."""

    __slots__ = ("_cursor", "_rows", "_tx")

    def __init__(self, cursor: Any, tx: Tx) -> None:
        self._cursor = cursor
        self._tx = tx
        self._rows: list[Row] | None = None

    def all(self) -> list[Row]:
        if self._rows is None:
            self._tx.wait_for(self._cursor)
            self._rows = list(self._cursor.fetchall())
            self._cursor.close()
        return self._rows

    def one(self) -> Row | None:
        rows = self.all()
        return rows[0] if rows else None


ChangeListener = Callable[[dict[str, int]], None]
EventListener = Callable[[list[EventRecord]], None]


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
        self._event_listeners: list[EventListener] = []
        self.outage: StoreUnavailable | None = None
        """The last write failure, until a write succeeds again."""

    def on_change(self, listener: ChangeListener) -> None:
        """Calls `listener` on the event loop after each commit that appended events."""
        self._listeners.append(listener)

    def on_events(self, listener: EventListener) -> None:
        """Calls `listener` on the event loop with the events of each commit, in order."""
        self._event_listeners.append(listener)

    def _settled(
        self, _outcomes: object, changed: dict[str, int], events: list[EventRecord]
    ) -> None:
        """A group committed (the writer's `on_settled`): tells the listeners."""
        if changed:
            for listener in self._listeners:
                listener(changed)
        if events:
            for event_listener in self._event_listeners:
                event_listener(events)

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


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

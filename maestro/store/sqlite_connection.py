"""One aiosqlite connection, used one operation at a time.

The rules that keep SQLite honest under asyncio live here, apart from the store's SQL:

- One operation at a time on a connection, reads included. aiosqlite runs a statement
  and its fetches as separate jobs on its thread, and statements that interleave on one
  connection share the oldest one's read snapshot: a read could miss a run committed a
  moment ago, and a write could begin on a stale snapshot and fail as "database is
  locked".
- Writes begin with BEGIN IMMEDIATE (the write lock up front, so a transaction never
  has to upgrade); reads of several statements share one BEGIN DEFERRED snapshot.
- A transaction is all or nothing even when its task is cancelled at any point.
- Every cursor is closed at once, so no statement keeps an old snapshot alive.
- The writer (the scheduler) holds an exclusive lock on the file: one database, one
  writer.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import aiosqlite

from maestro.core.errors import FailedPrecondition

log = logging.getLogger(__name__)

Row = aiosqlite.Row


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


class SqliteConnection:
    """A connection in WAL mode with the rules above."""

    def __init__(self, db: aiosqlite.Connection, writer_lock: IO[bytes] | None) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._writer_lock = writer_lock

    @classmethod
    async def open(cls, path: str, *, writer: bool) -> SqliteConnection:
        """Opens the file (creating it if needed).

        Args:
            path: the database file.
            writer: take the file's writer lock, held until close().

        Raises:
            FailedPrecondition: `writer` and another process holds the writer lock.
        """
        await asyncio.to_thread(Path(path).parent.mkdir, parents=True, exist_ok=True)
        writer_lock = await asyncio.to_thread(_take_writer_lock, path) if writer else None
        try:
            # isolation_level=None: we issue BEGIN ourselves.
            db = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            if writer_lock is not None:
                writer_lock.close()
            raise
        connection = cls(db, writer_lock)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=10000")
        except BaseException:
            await connection.close()
            raise
        return connection

    @property
    def is_writer(self) -> bool:
        return self._writer_lock is not None

    async def close(self) -> None:
        # aiosqlite's thread is not a daemon: a connection left open keeps the process
        # alive, even one that has just said it cannot start.
        await self._db.close()
        if self._writer_lock is not None:
            self._writer_lock.close()  # closing the file releases the flock

    async def executescript(self, script: str) -> None:
        """Runs DDL; executescript commits on its own, so never inside a transaction."""
        async with self._lock:
            await self._db.executescript(script)

    @asynccontextmanager
    async def transaction(self, begin: str = "BEGIN IMMEDIATE") -> AsyncIterator[Any]:
        """One transaction, all or nothing, even when the caller is cancelled.

        Args:
            begin: BEGIN IMMEDIATE for writes; BEGIN DEFERRED for a read snapshot.
        """
        async with self._lock:
            try:
                # BEGIN is inside the try: a cancellation that arrives while BEGIN is
                # queued on aiosqlite's thread must still be followed by a ROLLBACK, or
                # the connection would stay inside a transaction for good.
                await self._db.execute(begin)
                yield self._db
                await self._db.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise

    def snapshot(self) -> Any:
        """A read transaction: every statement inside sees the same committed state."""
        return self.transaction(begin="BEGIN DEFERRED")

    @asynccontextmanager
    async def single(self) -> AsyncIterator[None]:
        """The connection for one statement, which is its own transaction."""
        async with self._lock:
            yield

    async def stuck_in_transaction(self) -> bool:
        """Whether a transaction was left open (only transaction() opens them)."""
        async with self._lock:
            return self._db.in_transaction

    async def _rollback(self) -> None:
        # aiosqlite runs statements in order on its one thread, so this ROLLBACK comes
        # after whatever was already queued, even while this task is being cancelled.
        try:
            await self._db.execute("ROLLBACK")
        except sqlite3.OperationalError as err:
            if "no transaction is active" not in str(err):
                raise
            log.debug("rollback: the transaction had not begun")

    # The callers of these hold the connection (transaction, snapshot or single).

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self._db.execute(sql, args) as cursor:
            return list(await cursor.fetchall())

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        async with self._db.execute(sql, args) as cursor:
            return await cursor.fetchone()

"""SQLite: one file, one writer (group commit), reader threads in WAL mode."""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from maestro.core.errors import FailedPrecondition, Internal
from maestro.store.db import LOCK_WAIT_SECONDS, Database, Dialect, Tx, map_error, now_us
from maestro.store.group_commit import GroupWriter

T = TypeVar("T")


def _connect(path: str, *, query_only: bool) -> sqlite3.Connection:
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
        self._writer: GroupWriter | None = None
        if writer:
            try:
                # Fail at open, not at the first write, when the file cannot be used.
                _connect(path, query_only=False).close()
            except sqlite3.Error as err:
                self._release_writer_lock()
                raise map_error(err) from err
            self._writer = GroupWriter(
                name="sqlite-write",
                connect=lambda: _connect(path, query_only=False),
                dialect=Dialect.SQLITE,
                # The write lock up front, so a transaction never has to upgrade.
                begin="BEGIN IMMEDIATE",
                errors=(sqlite3.Error,),
                on_settled=self._settled,
            )

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        if self._writer is None:
            raise Internal("this store was opened read-only")
        return self._writer.submit(fn, args)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, query_only=True)
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
            await self._writer.close()
            self._writer = None
        self._release_writer_lock()
        self._readers.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

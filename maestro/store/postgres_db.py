"""PostgreSQL: one group-committing writer connection per process, reader threads.

Several schedulers share one database; each writes through its own writer. A group's
transactions commit together (maestro/store/group_commit.py), and a `NOTIFY` inside
one is delivered when (and only if) the group commits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from maestro.store.db import (
    LOCK_WAIT_SECONDS,
    Database,
    Dialect,
    StoreUnavailable,
    Tx,
    map_error,
    now_us,
)
from maestro.store.group_commit import GroupWriter, Pipelining

T = TypeVar("T")


def postgres_conninfo(url: str) -> str:
    """psycopg's conninfo for a `postgresql://` URL (a `+psycopg` driver suffix is dropped)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def connect(url: str, application: str) -> Any:
    """A connection in autocommit mode (transactions are opened explicitly)."""
    import psycopg
    from psycopg.rows import dict_row

    lock_ms = round(LOCK_WAIT_SECONDS * 1000)
    return psycopg.connect(
        postgres_conninfo(url),
        autocommit=True,
        row_factory=dict_row,
        connect_timeout=3,
        application_name=application,
        # A process paused inside a transaction (SIGSTOP, a long GC) must not hold its
        # row locks for ever: the server ends such a session, and with it the locks
        # that would keep other schedulers from taking its runs over.
        options=(
            f"-c lock_timeout={lock_ms} -c statement_timeout=10000"
            " -c idle_in_transaction_session_timeout=3000"
        ),
    )


def _send_sync(conn: Any, pipeline: Any) -> None:
    """Sends a Sync in `pipeline` without waiting for its result. psycopg (pinned in
    pyproject.toml) has no public call for this: `Pipeline.sync()` waits."""
    pipeline._enqueue_sync()
    conn.wait(pipeline._communicate_gen())


def _nothing_committed(conn: Any, commit: Any) -> bool:
    # A COMMIT after a failed statement ends the transaction as ROLLBACK; one that
    # failed itself (a deferred constraint) or was skipped has no status. Only a broken
    # connection leaves it unknown.
    return not conn.broken and commit.statusmessage != "COMMIT"


class PostgresDatabase(Database):
    """A PostgreSQL database: a writer connection (if writing) and reader threads."""

    dialect = Dialect.POSTGRES

    def __init__(
        self, url: str, *, writer: bool, readers: int = 4, application: str = "maestro"
    ) -> None:
        import psycopg

        super().__init__()
        self.url = url
        self._application = application
        self._loop = asyncio.get_running_loop()
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="postgres-read")
        self._writer = (
            GroupWriter(
                name="postgres-write",
                connect=lambda: connect(url, application),
                dialect=Dialect.POSTGRES,
                begin="BEGIN",
                errors=(psycopg.Error,),
                on_settled=self._settled,
                pipeline=Pipelining(
                    enter=lambda conn: conn.pipeline(),
                    send_sync=_send_sync,
                    nothing_committed=_nothing_committed,
                    committed=lambda commit: commit.statusmessage == "COMMIT",
                    statement_failed=lambda conn: (
                        conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
                    ),
                ),
            )
            if writer
            else None
        )

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        if self._writer is None:
            from maestro.core.errors import Internal

            raise Internal("this store was opened read-only")
        return self._writer.submit(fn, args)

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        conn = connect(self.url, self._application)
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _read_once(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return fn(Tx(cursor, Dialect.POSTGRES, now_us()), *args)
        except BaseException as err:
            conn = getattr(self._local, "conn", None)
            if conn is not None and conn.broken:
                conn.close()
            raise map_error(err) from err

    def _read_now(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return self._read_once(fn, args)
        except StoreUnavailable:
            conn = getattr(self._local, "conn", None)
            if conn is not None and not conn.closed:
                raise
            # The connection was dropped (a server restart, an administrator): a read is
            # safe to repeat once on a new one.
            return self._read_once(fn, args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._loop.run_in_executor(self._readers, self._read_now, fn, args)

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        await asyncio.to_thread(self._readers.shutdown, True)
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

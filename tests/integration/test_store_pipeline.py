"""PostgreSQL's writer sends a group's statements as one pipeline: what that must not
change. The writer's connection is the one under test; every test here is PostgreSQL's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from maestro.core.errors import Internal, NotFound
from maestro.store import Store
from maestro.store.db import Tx
from tests.integration.test_store import _created, _one_group

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

INSERT = (
    "INSERT INTO schedulers (scheduler_id, host, pid, start_time, heartbeat_time)"
    " VALUES (?, 'h', 1, 0, 0)"
)
TOUCH = "UPDATE schedulers SET pid = pid + 1 WHERE scheduler_id = ?"


def _lockable(database_url: str, run_id: str) -> bool:
    """Whether another session can lock the run's row within half a second."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = 500")
        try:
            with conn.transaction():
                conn.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run_id,))
        except psycopg.errors.LockNotAvailable:
            return False
        return True


@pytest.mark.parametrize("paused_after", ["a read", "an unread write"])
async def test_a_writer_paused_inside_a_transaction_loses_its_locks(
    store: Store, database_url: str, paused_after: str
) -> None:
    # A scheduler stopped (SIGSTOP, a long GC) between two statements must not keep
    # the run's row locked for ever: the server ends an idle transaction after 3 s
    # (postgres_db.connect), which it does only after a Sync, and only while no other
    # message (a Flush) came after it.
    lease = await _created(store)

    def lock_write_then_pause(tx: Tx) -> str:
        tx.execute("UPDATE runs SET error = 'x' WHERE run_id = ?", (lease.run_id,))  # unread
        tx.one("SELECT state FROM runs WHERE run_id = ? FOR UPDATE", (lease.run_id,))
        if paused_after == "an unread write":
            tx.execute("UPDATE runs SET error = 'y' WHERE run_id = ?", (lease.run_id,))
        time.sleep(6)  # the process is paused here
        return "resumed"

    paused = asyncio.ensure_future(store.db.write(lock_write_then_pause))
    await asyncio.sleep(4.5)

    taken = await asyncio.to_thread(_lockable, database_url, lease.run_id)
    outcome = (await asyncio.gather(paused, return_exceptions=True))[0]
    assert taken
    assert not isinstance(outcome, str)  # its session was ended: it committed nothing
    assert (await store.get_run(lease.run_id)).error == ""  # type: ignore[union-attr]


async def test_a_writer_paused_between_two_transactions_of_a_careful_rerun_loses_its_locks(
    store: Store, database_url: str
) -> None:
    # The group fails pipelined (a duplicate), so it runs again carefully, each
    # transaction waited for before the next; a pause between two of them must not
    # keep the locks of the first either.
    lease = await _created(store)
    await store.db.write(lambda tx: tx.execute(INSERT, ("taken",)))
    paused_at: list[float] = []
    careful_pause = threading.Event()

    def lock(tx: Tx) -> str:
        tx.execute("UPDATE runs SET error = error WHERE run_id = ?", (lease.run_id,))
        return "locked"

    def pause(tx: Tx) -> str:
        paused_at.append(time.monotonic())
        if len(paused_at) == 2:
            careful_pause.set()
        time.sleep(6)
        return "resumed"

    def duplicate(tx: Tx) -> None:
        tx.execute(INSERT, ("taken",))

    async with _one_group(store):
        writes = [
            asyncio.ensure_future(store.db.write(lock)),
            asyncio.ensure_future(store.db.write(pause)),
            asyncio.ensure_future(store.db.write(duplicate)),
        ]
    assert await asyncio.to_thread(careful_pause.wait, 30)
    await asyncio.sleep(4.5 - (time.monotonic() - paused_at[1]))
    taken = await asyncio.to_thread(_lockable, database_url, lease.run_id)
    await asyncio.gather(*writes, return_exceptions=True)
    assert taken


async def test_a_failed_statement_leaves_no_trace_on_the_next_transactions(store: Store) -> None:
    # A statement sent for the sixth time is one psycopg would prepare on the server;
    # sent in a pipeline after another transaction's failed statement, the server
    # refuses its Parse. Later runs of that statement must still work.
    await store.db.write(lambda tx: tx.execute(INSERT, ("taken",)))

    def refuses(tx: Tx) -> None:
        tx.execute("SELECT 1")
        raise NotFound("refused")

    with pytest.raises(NotFound):  # a rollback, as any refusal makes
        await store.db.write(refuses)
    for _ in range(5):
        await store.db.write(lambda tx: tx.execute(TOUCH, ("taken",)))

    def duplicate(tx: Tx) -> None:
        tx.execute(INSERT, ("taken",))  # fails; never read

    def touch(tx: Tx) -> str:
        tx.execute(TOUCH, ("taken",))
        return "touched"

    async with _one_group(store):
        writes = [
            asyncio.ensure_future(store.db.write(duplicate)),
            asyncio.ensure_future(store.db.write(touch)),
        ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    later = [await store.db.write(touch) for _ in range(3)]
    assert isinstance(results[0], Internal)
    assert results[1] == "touched"
    assert later == ["touched"] * 3


async def test_a_read_gets_its_own_rows_while_others_are_in_flight(store: Store) -> None:
    # An unread statement on the transaction's cursor, then a large result in flight:
    # a read must never be handed the earlier statement's result.
    lease = await _created(store)

    def job(tx: Tx) -> tuple[Any, list[tuple[Any, ...]]]:
        tx.announce(lease.run_id, 1)  # SELECT pg_notify(...), not read
        big = tx.query("SELECT repeat('z', 64000) AS content")
        state = tx.one("SELECT state FROM runs WHERE run_id = ?", (lease.run_id,))
        values = tx.values("SELECT run_id FROM runs WHERE run_id = ?", (lease.run_id,))
        big.all()
        return state, values

    for _ in range(100):
        state, values = await store.db.write(job)
        assert state["state"] == "PENDING"
        assert values == [(lease.run_id,)]


async def test_a_refusal_after_a_failed_statement_is_not_taken_for_the_cause(
    store: Store,
) -> None:
    # A transaction whose unread write failed, and that then refuses: its caller hears
    # of a failure, the others of its group commit.
    await store.db.write(lambda tx: tx.execute(INSERT, ("taken",)))

    def duplicate_then_refuse(tx: Tx) -> None:
        tx.execute(INSERT, ("taken",))
        raise NotFound("refused after writing")

    def note(tx: Tx, value: str) -> str:
        tx.execute(INSERT, (value,))
        return value

    async with _one_group(store):
        writes = [
            asyncio.ensure_future(store.db.write(note, "before")),
            asyncio.ensure_future(store.db.write(duplicate_then_refuse)),
            asyncio.ensure_future(store.db.write(note, "after")),
        ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert results[0] == "before" and results[2] == "after"
    assert isinstance(results[1], Internal | NotFound)
    stored = await store.db.read(lambda tx: tx.all("SELECT scheduler_id FROM schedulers"))
    assert sorted(row["scheduler_id"] for row in stored) == ["after", "before", "taken"]

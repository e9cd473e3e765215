"""Run ownership, deletion, retention and artifact pages in the SQLite store."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from maestro.core.errors import FailedPrecondition
from maestro.store import NewRun, RunState, StepResultRecord, Store, open_store
from maestro.store.retention import expire_runs
from maestro.store.schema import SCHEMA


def _new_run(run_id: str, created_by: str) -> NewRun:
    return NewRun(
        run_id=run_id,
        workflow_name="w",
        spec_json="{}",
        requirement="req",
        provider="offline",
        request_id="",
        steps=(("a", "backend_developer", ()),),
        created_by=created_by,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite:///{tmp_path / 'maestro.db'}")
    yield store
    await store.close()


async def _finished(store: Store, run_id: str, created_by: str, files: int = 0) -> None:
    await store.create_run(_new_run(run_id, created_by))
    await store.start_run(run_id)
    attempt = await store.start_attempt(run_id, "a", "offline")
    result = StepResultRecord(
        summary="s",
        files=tuple((f"docs/{i:03d}.md", b"x") for i in range(files)),
        provider="offline",
        model="offline",
        input_tokens=0,
        output_tokens=0,
    )
    await store.complete_step(run_id, "a", attempt, result)
    await store.finish_run(run_id, RunState.SUCCEEDED, "")


async def test_runs_record_their_creator_and_list_by_it(store: Store) -> None:
    await store.create_run(_new_run("r1", "alice"))
    await store.create_run(_new_run("r2", "bob"))
    await store.create_run(_new_run("r3", "alice"))
    run = await store.get_run("r1")
    assert run is not None and run.created_by == "alice"
    assert [r.run_id for r in await store.list_runs(10, created_by="alice")] == ["r3", "r1"]
    assert [r.run_id for r in await store.list_runs(10)] == ["r3", "r2", "r1"]
    first = (await store.list_runs(1, created_by="alice"))[0]
    after = await store.list_runs(10, (first.create_time, first.run_id), created_by="alice")
    assert [r.run_id for r in after] == ["r1"]


async def test_deleting_removes_a_finished_run_and_everything_of_it(store: Store) -> None:
    await _finished(store, "r1", "alice", files=2)
    await store.create_run(_new_run("r2", "alice"))
    with pytest.raises(FailedPrecondition, match="cancel it"):
        await store.delete_run("r2")
    assert await store.delete_run("r1") is True
    assert await store.get_run("r1") is None
    assert await store.events_after("r1", 0) == []
    assert await store.list_artifacts("r1") == []
    assert await store.delete_run("r1") is False
    assert await store.get_run("r2") is not None


async def test_retention_deletes_only_runs_finished_long_enough_ago(store: Store) -> None:
    await _finished(store, "old", "alice")
    await store.create_run(_new_run("running", "alice"))
    assert await expire_runs(store, retention=timedelta(days=30)) == 0
    later = datetime.now(UTC) + timedelta(days=31)
    assert await store.expired_run_ids(later - timedelta(days=30), 10) == ["old"]
    assert await expire_runs(store, retention=timedelta(days=30), now=later) == 1
    assert await store.get_run("old") is None
    assert await store.get_run("running") is not None


async def test_artifacts_are_listed_in_pages_by_path(store: Store) -> None:
    await _finished(store, "r1", "alice", files=5)
    first = await store.list_artifacts("r1", limit=2)
    assert [a.path for a in first] == ["docs/000.md", "docs/001.md"]
    rest = await store.list_artifacts("r1", limit=10, after=first[-1].path)
    assert [a.path for a in rest] == ["docs/002.md", "docs/003.md", "docs/004.md"]


async def test_a_database_made_before_created_by_existed_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_schema = SCHEMA.replace(",\n    created_by    TEXT NOT NULL DEFAULT ''", "")
    assert "created_by" not in old_schema
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO schema_version (version) VALUES (1)")
        db.execute(
            "INSERT INTO runs (run_id, workflow_name, spec_json, requirement, provider,"
            " request_id, state, create_time) VALUES ('r0', 'w', '{}', 'r', '', '', 'PENDING',"
            " '2026-01-01T00:00:00.000000+00:00')"
        )
    store = await open_store(f"sqlite:///{path}")
    try:
        run = await store.get_run("r0")
        assert run is not None and run.created_by == ""
        await store.create_run(_new_run("r1", "alice"))
        assert [r.run_id for r in await store.list_runs(10, created_by="alice")] == ["r1"]
    finally:
        await store.close()

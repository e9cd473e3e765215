"""Artifact pages and retention on real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from maestro.store import Lease, NewRun, RunState, StepResultRecord, Store, Usage
from maestro.store.retention import expire_runs

ME = "scheduler-a"


async def _created(store: Store, run_id: str) -> Lease:
    new = NewRun(
        run_id=run_id,
        workflow_name="w",
        spec_json="{}",
        requirement="req",
        provider="offline",
        request_id="",
        created_by="alice",
        steps=(("a", "backend_developer", "persona", ()),),
    )
    lease = (await store.create_run(new, owner=ME)).lease
    assert lease is not None
    return lease


async def _finished(store: Store, run_id: str, files: int = 0) -> None:
    lease = await _created(store, run_id)
    await store.start_run(lease)
    attempt, dispatch = await store.start_dispatch(lease, "a", "offline")
    result = StepResultRecord(
        summary="s",
        files=tuple((f"docs/{i:03d}.md", b"x") for i in range(files)),
        provider="offline",
        model="offline",
        usage=Usage(0, 0),
    )
    await store.complete_step(lease, "a", attempt, dispatch, result)
    await store.finish_run(lease, RunState.SUCCEEDED, "")


async def test_artifacts_are_listed_in_pages_by_path(store: Store) -> None:
    await _finished(store, "r1", files=5)
    first = await store.list_artifacts("r1", limit=2)
    assert [a.path for a in first] == ["docs/000.md", "docs/001.md"]
    rest = await store.list_artifacts("r1", limit=10, after=first[-1].path)
    assert [a.path for a in rest] == ["docs/002.md", "docs/003.md", "docs/004.md"]
    assert [a.path for a in await store.list_artifacts("r1")] == [
        f"docs/{i:03d}.md" for i in range(5)
    ]


async def test_retention_deletes_only_runs_finished_long_enough_ago(store: Store) -> None:
    await _finished(store, "old")
    await _created(store, "running")
    assert await expire_runs(store, retention=timedelta(days=30)) == 0
    later = datetime.now(UTC) + timedelta(days=31)
    assert await store.expired_run_ids(later - timedelta(days=30), 10) == ["old"]
    assert await expire_runs(store, retention=timedelta(days=30), now=later) == 1
    assert await store.get_run("old") is None
    assert await store.get_run("running") is not None

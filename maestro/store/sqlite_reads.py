"""The SQLite store's reads: runs with their steps, events and artifacts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from maestro.store.models import (
    ArtifactRecord,
    EventRecord,
    RunRecord,
    RunState,
    StepOutputRecord,
)
from maestro.store.sqlite_connection import Row, SqliteConnection
from maestro.store.sqlite_rows import (
    artifact_from_row,
    event_from_row,
    run_from_row,
    step_from_row,
)


class SqliteReads:
    """The read half of SqliteStore. Reads of several statements share one snapshot."""

    _conn: SqliteConnection

    async def _run(self, row: Row) -> RunRecord:
        steps = await self._conn.fetchall(
            "SELECT * FROM steps WHERE run_id = ? ORDER BY position", (row["run_id"],)
        )
        return run_from_row(row, tuple(step_from_row(step) for step in steps))

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._conn.snapshot():
            row = await self._conn.fetchone("SELECT * FROM runs WHERE run_id = ?", (run_id,))
            return None if row is None else await self._run(row)

    async def run_finished(self, run_id: str) -> bool:
        async with self._conn.single():
            row = await self._conn.fetchone("SELECT state FROM runs WHERE run_id = ?", (run_id,))
            return row is not None and RunState(row["state"]).finished

    async def find_run_by_request_id(self, request_id: str) -> RunRecord | None:
        async with self._conn.snapshot():
            row = await self._conn.fetchone(
                "SELECT * FROM runs WHERE request_id = ?", (request_id,)
            )
            return None if row is None else await self._run(row)

    async def list_runs(
        self, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[RunRecord]:
        async with self._conn.snapshot():
            if after is None:
                rows = await self._conn.fetchall(
                    "SELECT * FROM runs ORDER BY create_time DESC, run_id DESC LIMIT ?", (limit,)
                )
            else:
                rows = await self._conn.fetchall(
                    "SELECT * FROM runs WHERE (create_time, run_id) < (?, ?)"
                    " ORDER BY create_time DESC, run_id DESC LIMIT ?",
                    (after[0].isoformat(timespec="microseconds"), after[1], limit),
                )
            return [await self._run(row) for row in rows]

    async def unfinished_run_ids(self) -> list[str]:
        async with self._conn.single():
            rows = await self._conn.fetchall(
                "SELECT run_id FROM runs WHERE state IN ('PENDING', 'RUNNING') ORDER BY create_time"
            )
            return [row["run_id"] for row in rows]

    async def events_after(
        self, run_id: str, after_sequence: int, limit: int = 500
    ) -> list[EventRecord]:
        async with self._conn.single():
            rows = await self._conn.fetchall(
                "SELECT * FROM events WHERE run_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
                (run_id, after_sequence, limit),
            )
            return [event_from_row(row) for row in rows]

    async def list_artifacts(self, run_id: str) -> list[ArtifactRecord]:
        async with self._conn.single():
            rows = await self._conn.fetchall(
                "SELECT run_id, path, step_id, size_bytes, sha256, create_time FROM artifacts"
                " WHERE run_id = ? ORDER BY path",
                (run_id,),
            )
            return [artifact_from_row(row, with_content=False) for row in rows]

    async def get_artifact(self, run_id: str, path: str) -> ArtifactRecord | None:
        async with self._conn.single():
            row = await self._conn.fetchone(
                "SELECT * FROM artifacts WHERE run_id = ? AND path = ?", (run_id, path)
            )
            return None if row is None else artifact_from_row(row, with_content=True)

    async def step_outputs(self, run_id: str, step_ids: Sequence[str]) -> list[StepOutputRecord]:
        async with self._conn.snapshot():
            outputs = []
            for step_id in step_ids:
                step = await self._conn.fetchone(
                    "SELECT persona, summary FROM steps WHERE run_id = ? AND step_id = ?"
                    " AND state = 'SUCCEEDED'",
                    (run_id, step_id),
                )
                if step is None:
                    continue
                files = await self._conn.fetchall(
                    "SELECT path, content FROM artifacts WHERE run_id = ? AND step_id = ?"
                    " ORDER BY path",
                    (run_id, step_id),
                )
                outputs.append(
                    StepOutputRecord(
                        step_id=step_id,
                        persona=step["persona"],
                        summary=step["summary"],
                        files=tuple((f["path"], bytes(f["content"])) for f in files),
                    )
                )
            return outputs

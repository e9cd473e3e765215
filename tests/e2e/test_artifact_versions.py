"""Artifacts keep their history: every write of a path is a version, two steps writing
one path in one round is a recorded conflict, and every version can be listed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from maestro.api.gateway.v1 import gateway_pb2
from maestro.cli.credentials import read_local_token
from maestro.cli.stack import LocalStack
from tests.e2e.events import collect_events, event_type_name

if TYPE_CHECKING:
    from maestro.api.gateway.v1 import gateway_pb2_grpc

    Stub = gateway_pb2_grpc.MaestroServiceAsyncStub

# Two developers at once, on the same paths (the offline provider writes the same tree).
TWINS = """\
name: twins
steps:
  - {id: one, persona: backend_developer}
  - {id: two, persona: backend_developer}
"""


async def test_two_steps_writing_one_path_is_a_conflict_and_both_versions_stay(
    offline_stack: LocalStack, gateway: Stub, tmp_path: Path
) -> None:
    run = await gateway.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_yaml=TWINS, requirement="a todo list", request_id=uuid.uuid4().hex
        ),
        timeout=10,
    )
    events = await collect_events(gateway, run.name)
    assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
    conflicts = [e for e in events if event_type_name(e) == "ARTIFACT_CONFLICT"]
    assert conflicts
    paths = {e.attributes["path"] for e in conflicts}
    assert "pyproject.toml" in paths
    for conflict in conflicts:
        assert {conflict.step_id, conflict.attributes["replaces_step"]} == {"one", "two"}
        assert (conflict.attributes["round"], conflict.attributes["version"]) == ("0", "2")

    latest = await gateway.ListArtifacts(
        gateway_pb2.ListArtifactsRequest(parent=run.name), timeout=10
    )
    every = []
    token = ""
    while True:  # small pages: a page may end between two versions of one path
        page = await gateway.ListArtifacts(
            gateway_pb2.ListArtifactsRequest(
                parent=run.name, all_versions=True, page_size=3, page_token=token
            ),
            timeout=10,
        )
        every += list(page.artifacts)
        token = page.next_page_token
        if not token:
            break
    assert len(every) == len(latest.artifacts) + len(conflicts)
    assert len({(a.path, a.version) for a in every}) == len(every)
    versions = [a for a in every if a.path == "pyproject.toml"]
    assert [(a.version, a.latest) for a in versions] == [(1, False), (2, True)]
    assert {a.step_id for a in versions} == {"one", "two"}
    (read,) = [a for a in latest.artifacts if a.path == "pyproject.toml"]
    assert (read.version, read.step_id) == (2, versions[1].step_id)

    token_text = read_local_token(offline_stack.data_dir)
    assert token_text is not None
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "MAESTRO_GATEWAY")}
    where = ("--gateway", offline_stack.gateway_address, "--token", token_text)
    cwd = tmp_path / "cli"
    await asyncio.to_thread(cwd.mkdir)
    for extra in ((), ("--json",)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "maestro.cli",
            "artifacts",
            run.name,
            "--all-versions",
            *extra,
            *where,
            cwd=cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        if extra:
            listed = json.loads(out)["versions"]
            assert len(listed) == len(every)
            assert [v["version"] for v in listed if v["path"] == "pyproject.toml"] == [1, 2]
        else:
            lines = out.decode().splitlines()
            assert lines[0].split()[:7] == [
                "PATH",
                "VERSION",
                "STEP",
                "ROUND",
                "ATTEMPT",
                "SIZE",
                "SHA256",
            ]
            rows = [line.split() for line in lines if line.startswith("pyproject.toml ")]
            assert [r[1] for r in rows] == ["1", "2"] and rows[1][-1] == "latest"
    assert await asyncio.to_thread(os.listdir, cwd) == []  # listing downloads nothing


async def test_paths_the_workflow_declares_shared_are_no_conflict(gateway: Stub) -> None:
    shared = TWINS.replace("name: twins\n", "name: twins\nshared_paths: [pyproject.toml, app/]\n")
    run = await gateway.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_yaml=shared, requirement="a todo list", request_id=uuid.uuid4().hex
        ),
        timeout=10,
    )
    events = await collect_events(gateway, run.name)
    assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
    conflicts = {e.attributes["path"] for e in events if event_type_name(e) == "ARTIFACT_CONFLICT"}
    assert conflicts, "the twins also write paths that are not shared"
    assert "pyproject.toml" not in conflicts
    assert not any(path.startswith("app/") for path in conflicts)

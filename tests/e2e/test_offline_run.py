"""A full sdlc-parallel run with the offline provider, through every real service."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.e2e.events import TERMINAL, collect_batches, collect_events, event_type_name

REQUIREMENT = "A REST API with user registration and login"


async def _create(stub: gateway_pb2_grpc.MaestroServiceAsyncStub, **fields: str) -> gateway_pb2.Run:
    request = gateway_pb2.CreateRunRequest(
        workflow_name=fields.get("workflow", "sdlc-parallel"),
        requirement=fields.get("requirement", REQUIREMENT),
        request_id=fields.get("request_id", uuid.uuid4().hex),
    )
    return await stub.CreateRun(request, timeout=10)


async def test_sdlc_parallel_run_produces_artifacts_and_a_dense_event_log(
    gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, tmp_path: Path
) -> None:
    run = await _create(gateway)
    assert run.name.startswith("runs/")
    # CreateRun answers with the run as recorded, before it starts: what GetRun says
    # of it, but for what has happened since.
    assert run.state == gateway_pb2.RUN_STATE_PENDING
    now = await gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=10)
    for field in ("name", "workflow", "requirement", "create_time", "provider", "creator"):
        assert getattr(run, field) == getattr(now, field), field
    assert [(s.name, s.step_id, s.persona, s.kind, list(s.depends_on)) for s in run.steps] == [
        (s.name, s.step_id, s.persona, s.kind, list(s.depends_on)) for s in now.steps
    ]
    assert {s.state for s in run.steps} == {gateway_pb2.STEP_STATE_PENDING}

    events = await collect_events(gateway, run.name)

    # Dense, ordered, and the terminal event is the last and only terminal one.
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    assert sum(e.type in TERMINAL for e in events) == 1
    assert all(e.run == run.name for e in events)
    succeeded = [e for e in events if e.type == gateway_pb2.EVENT_TYPE_STEP_SUCCEEDED]
    assert {e.step_id for e in succeeded} == {
        "requirements",
        "architecture",
        "backend",
        "frontend",
        "testing",
        "packaging",
        "checks",
        "review",
        "docs",
    }
    # The offline provider is always labelled as such, on every event it causes.
    from_worker = (
        gateway_pb2.EVENT_TYPE_STEP_PROGRESS,
        gateway_pb2.EVENT_TYPE_ARTIFACT_RECORDED,
        gateway_pb2.EVENT_TYPE_STEP_SUCCEEDED,
    )
    caused = [e for e in events if e.type in from_worker and e.step_id != "checks"]
    assert len(caused) > len(succeeded)
    assert all(e.attributes["provider"] == "offline" for e in caused)
    # The gate measured the offline project in the sandbox, and it passed for real.
    (gate,) = [e for e in events if e.type == gateway_pb2.EVENT_TYPE_GATE_EVALUATED]
    assert gate.step_id == "checks"
    assert gate.attributes["passed"] == "true"
    assert gate.attributes["isolation"] == "namespaces"
    assert int(gate.attributes["metric.tests_passed"]) >= 1
    assert gate.attributes["metric.tests_failed"] == "0"
    assert gate.attributes["metric.lint_errors"] == "0"
    assert gate.attributes["verdict.compile_errors"] == "pass"

    final = await gateway.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=10)
    assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED
    assert final.error == ""
    steps = {s.step_id: s for s in final.steps}
    assert all(s.state == gateway_pb2.STEP_STATE_SUCCEEDED for s in steps.values())
    personas = [s for s in steps.values() if s.kind == "persona"]
    assert all(s.provider == "offline" and s.attempts == 1 for s in personas)
    checks = steps["checks"]
    assert (checks.kind, checks.provider, checks.round) == ("gate", "sandbox", 0)
    metrics = {m.metric: m for m in checks.gate_metrics}
    assert set(metrics) == {
        "tests_passed",
        "tests_failed",
        "tests_errors",
        "lint_errors",
        "compile_errors",
    }
    assert all(m.measured and m.passed for m in metrics.values())
    assert metrics["tests_failed"].threshold == "<= 0"

    # backend and frontend both depend only on architecture: they must overlap.
    backend, frontend = steps["backend"], steps["frontend"]
    assert backend.start_time.ToDatetime() < frontend.end_time.ToDatetime()
    assert frontend.start_time.ToDatetime() < backend.end_time.ToDatetime()
    # And nothing starts before its dependencies finished.
    assert steps["testing"].start_time.ToDatetime() >= max(
        backend.end_time.ToDatetime(), frontend.end_time.ToDatetime()
    )

    listing = await gateway.ListArtifacts(
        gateway_pb2.ListArtifactsRequest(parent=run.name), timeout=10
    )
    paths = {a.path: a for a in listing.artifacts}
    assert {"docs/requirements.md", "docs/architecture.md", "docs/code-review.md"} <= set(paths)
    assert any(p.startswith("app/") for p in paths)
    assert any(p.startswith("frontend/") for p in paths)
    assert all(a.content == b"" for a in listing.artifacts)  # listing carries no content
    recorded = [e for e in events if e.type == gateway_pb2.EVENT_TYPE_ARTIFACT_RECORDED]
    assert {e.attributes["path"] for e in recorded} == set(paths)
    # The typed details say what the attributes say, with their types.
    for event in recorded:
        details = event.artifact_recorded
        assert event.WhichOneof("details") == "artifact_recorded"
        assert (details.path, details.sha256) == (
            event.attributes["path"],
            paths[details.path].sha256,
        )
        assert details.size_bytes == paths[details.path].size_bytes
    for event in succeeded:
        if event.step_id == "checks":
            continue  # a gate writes no files; its facts are in GATE_EVALUATED
        assert event.WhichOneof("details") == "step_succeeded"
        assert event.step_succeeded.files == int(event.attributes["files"]) > 0
        assert (event.step_succeeded.attempt, event.step_succeeded.provider) == (1, "offline")

    # The artifacts are a real project: download them and run its tests.
    out = tmp_path / "out"
    for artifact in listing.artifacts:
        full = await gateway.GetArtifact(
            gateway_pb2.GetArtifactRequest(name=artifact.name), timeout=10
        )
        assert len(full.content) == artifact.size_bytes
        target = out / full.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(full.content)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        cwd=out,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, output.decode()
    assert b" passed" in output


async def test_resumed_stream_gets_exactly_the_missing_events(
    gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
) -> None:
    run = await _create(gateway, workflow="sdlc-linear")
    everything = await collect_events(gateway, run.name)
    assert len(everything) > 10

    for after in (1, 5, len(everything) - 1):
        resumed = await collect_events(gateway, run.name, after=after)
        assert [e.sequence for e in resumed] == [e.sequence for e in everything[after:]]
        assert [event_type_name(e) for e in resumed] == [
            event_type_name(e) for e in everything[after:]
        ]

    # Past the end there is nothing; the stream must not hang waiting.
    assert await collect_events(gateway, run.name, after=len(everything), timeout=2) == []


async def test_batched_stream_carries_the_same_events_live_and_resumed(
    gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
) -> None:
    run = await _create(gateway, workflow="sdlc-parallel")
    # Both opened as the run starts: the batched one follows it live.
    batches, everything = await asyncio.gather(
        collect_batches(gateway, run.name), collect_events(gateway, run.name)
    )
    assert all(batches)  # no message is empty
    assert [e for batch in batches for e in batch] == everything
    assert everything[-1].type in TERMINAL

    # A finished run's log comes back in few messages, from wherever the client was.
    for after in (0, 5):
        replay = await collect_batches(gateway, run.name, after=after)
        assert [e for batch in replay for e in batch] == everything[after:]
        assert len(replay) < len(everything[after:])
    assert await collect_batches(gateway, run.name, after=len(everything), timeout=2) == []

    unknown = gateway_pb2.StreamRunEventsRequest(name="runs/0123456789abcdef")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await gateway.StreamRunEventBatches(unknown, timeout=10).read()
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    bad = gateway_pb2.StreamRunEventsRequest(name=run.name, after_sequence=-1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.StreamRunEventBatches(bad, timeout=10).read()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_same_request_id_returns_the_same_run(
    gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
) -> None:
    request_id = uuid.uuid4().hex
    first = await _create(gateway, request_id=request_id, workflow="sdlc-linear")
    again = await _create(gateway, request_id=request_id, workflow="sdlc-linear")
    assert again.name == first.name
    listing = await gateway.ListRuns(gateway_pb2.ListRunsRequest(), timeout=10)
    assert [r.name for r in listing.runs] == [first.name]
    await collect_events(gateway, first.name)


async def test_a_request_id_used_for_a_different_request_is_refused(
    gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
) -> None:
    request_id = uuid.uuid4().hex
    first = await _create(gateway, request_id=request_id, workflow="sdlc-linear")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create(gateway, request_id=request_id, requirement="something else")
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.name in (refused.value.details() or "")
    listing = await gateway.ListRuns(gateway_pb2.ListRunsRequest(), timeout=10)
    assert [r.name for r in listing.runs] == [first.name]
    await collect_events(gateway, first.name)

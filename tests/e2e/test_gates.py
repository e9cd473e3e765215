"""Gate steps through every real service: the sandbox runs the checks for real, the
scheduler judges them, and a failing gate sends work back for a bounded number of
rounds. The only fake is the Anthropic API, reached through the real SDK."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import grpc
import pytest

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.stack import SCHEDULER, LocalStack
from tests.e2e.channels import gateway_channel
from tests.e2e.conftest import FAST_RETRIES
from tests.e2e.events import collect_events, event_type_name, wait_for_event
from tests.fakes.anthropic_server import FakeAnthropic, JsonAnswer, Stall, ToolCall, ToolCalls

PYPROJECT = """\
[project]
name = "calc"
version = "0.1.0"

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
"""
TEST = "from app.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
WRONG = "def add(a, b):\n    return a - b\n"
RIGHT = "def add(a, b):\n    return a + b\n"
# pytest dies at start-up, before it could write its report: the gate must fail.
CRASHING_CONFTEST = "import os\n\nos._exit(3)\n"

GATED = """\
name: gated
retry: {{max_attempts: 1}}
steps:
  - id: build
    persona: backend_developer
    instructions: Implement add(a, b) in app/calc.py with a pytest test.
  - id: checks
    kind: gate
    depends_on: [build]
    checks: [pytest, compile]
    thresholds:
      tests_passed: {{min: 1}}
      tests_failed: {{max: 0}}
      compile_errors: {{max: 0}}
{on_fail}
"""


def gated(max_rounds: int | None) -> str:
    on_fail = (
        "" if max_rounds is None else f"    on_fail: {{rework: [build], max_rounds: {max_rounds}}}"
    )
    return GATED.format(on_fail=on_fail)


def script_build(fake: FakeAnthropic, calc: str, *, extra: dict[str, str] | None = None) -> None:
    """The backend developer's next attempt: write the package and its test, then submit."""
    files = {
        "pyproject.toml": PYPROJECT,
        "app/__init__.py": "",
        "app/calc.py": calc,
        "tests/test_backend_calc.py": TEST,
        **(extra or {}),
    }
    writes = tuple(ToolCall("write_file", {"path": p, "content": c}) for p, c in files.items())
    fake.push_when("backend developer", ToolCalls(writes, text="Writing the package."))
    fake.push_when(
        "backend developer", ToolCalls((ToolCall("submit", {"summary": "add() and its test"}),))
    )


async def create(
    stub: gateway_pb2_grpc.MaestroServiceAsyncStub, workflow_yaml: str
) -> gateway_pb2.Run:
    return await stub.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_yaml=workflow_yaml,
            requirement="add two numbers",
            request_id=uuid.uuid4().hex,
        ),
        timeout=10,
    )


async def get(stub: gateway_pb2_grpc.MaestroServiceAsyncStub, name: str) -> gateway_pb2.Run:
    return await stub.GetRun(gateway_pb2.GetRunRequest(name=name), timeout=10)


def of_type(events: list[gateway_pb2.RunEvent], name: str) -> list[gateway_pb2.RunEvent]:
    return [e for e in events if event_type_name(e) == name]


def user_text(body: dict[str, object]) -> str:
    return json.dumps(body.get("messages", []))


async def test_a_failing_gate_sends_the_work_back_and_the_fixed_round_passes(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    script_build(fake_anthropic, WRONG)
    script_build(fake_anthropic, RIGHT)
    run = await create(anthropic_gateway, gated(max_rounds=2))
    events = await collect_events(anthropic_gateway, run.name, timeout=120)

    assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
    first, second = of_type(events, "GATE_EVALUATED")
    assert (first.attributes["passed"], first.attributes["round"]) == ("false", "0")
    assert first.attributes["metric.tests_failed"] == "1"
    assert first.attributes["verdict.tests_failed"] == "fail"
    assert first.attributes["threshold.tests_failed"] == "<= 0"
    assert (second.attributes["passed"], second.attributes["round"]) == ("true", "1")
    assert second.attributes["metric.tests_passed"] == "1"
    (rework,) = of_type(events, "REWORK_REQUESTED")
    assert (rework.step_id, rework.attributes["round"]) == ("checks", "1")
    assert rework.attributes["steps"] == "build,checks"
    assert "tests_failed = 1, above the maximum 0" in rework.attributes["reason"]

    # The reworked attempt was told what failed and what it had done before.
    requests = [
        r.body for r in fake_anthropic.requests if "backend developer" in json.dumps(r.body)
    ]
    assert "Rework feedback" not in user_text(requests[0])
    told = user_text(requests[2])
    assert "rework round 1 of 2" in told
    assert "test_add" in told and "tests_failed = 1, above the maximum 0" in told
    assert "add() and its test" in told

    final = await get(anthropic_gateway, run.name)
    steps = {s.step_id: s for s in final.steps}
    assert steps["build"].round == steps["checks"].round == 1
    assert steps["build"].attempts == 2  # numbered on across rounds
    metrics = {m.metric: m for m in steps["checks"].gate_metrics}
    assert metrics["tests_failed"].measured and metrics["tests_failed"].value == 0
    assert all(m.passed for m in metrics.values())
    # The reworked file is a new version in the new round, not a conflict.
    assert not of_type(events, "ARTIFACT_CONFLICT")
    listing = await anthropic_gateway.ListArtifacts(
        gateway_pb2.ListArtifactsRequest(parent=run.name, all_versions=True), timeout=10
    )
    calc = [a for a in listing.artifacts if a.path == "app/calc.py"]
    assert [(a.version, a.round, a.attempt, a.latest) for a in calc] == [
        (1, 0, 1, False),
        (2, 1, 2, True),
    ]


async def test_a_gate_that_stays_failing_fails_the_run_after_max_rounds(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    script_build(fake_anthropic, WRONG)
    script_build(fake_anthropic, WRONG)
    run = await create(anthropic_gateway, gated(max_rounds=1))
    events = await collect_events(anthropic_gateway, run.name, timeout=120)

    assert event_type_name(events[-1]) == "RUN_FAILED"
    assert len(of_type(events, "GATE_EVALUATED")) == 2
    assert len(of_type(events, "REWORK_REQUESTED")) == 1
    final = await get(anthropic_gateway, run.name)
    assert final.state == gateway_pb2.RUN_STATE_FAILED
    assert "gate 'checks' failed in round 1 after 1 rework round" in final.error
    assert "tests_failed = 1, above the maximum 0" in final.error
    steps = {s.step_id: s for s in final.steps}
    assert steps["checks"].state == gateway_pb2.STEP_STATE_FAILED
    assert steps["build"].state == gateway_pb2.STEP_STATE_SUCCEEDED


async def test_a_crashed_tool_fails_the_gate_closed(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    script_build(fake_anthropic, RIGHT, extra={"tests/conftest.py": CRASHING_CONFTEST})
    run = await create(anthropic_gateway, gated(max_rounds=None))
    events = await collect_events(anthropic_gateway, run.name, timeout=120)

    assert event_type_name(events[-1]) == "RUN_FAILED"
    (gate,) = of_type(events, "GATE_EVALUATED")
    assert gate.attributes["passed"] == "false"
    assert "check pytest tool crashed" in gate.attributes["problems"]
    # Not measured is not passed: the pytest metrics are missing and fail.
    assert gate.attributes["metric.tests_failed"] == "missing"
    assert gate.attributes["verdict.tests_failed"] == "fail"
    final = await get(anthropic_gateway, run.name)
    assert "gate 'checks' failed in round 0" in final.error
    assert "tool crashed" in final.error


async def test_each_kind_of_threshold_fails_a_gate(
    gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
) -> None:
    # The offline provider's project passes its real checks; these bounds it cannot meet.
    workflow = """\
name: strict
steps:
  - {id: build, persona: backend_developer}
  - id: checks
    kind: gate
    depends_on: [build]
    checks: [pytest, ruff]
    thresholds:
      tests_passed: {min: 1000}
      tests_collected: {max: 0}
      lint_errors: {min: 5, max: 9}
"""
    run = await create(gateway, workflow)
    events = await collect_events(gateway, run.name, timeout=120)

    assert event_type_name(events[-1]) == "RUN_FAILED"
    (gate,) = of_type(events, "GATE_EVALUATED")
    assert gate.attributes["passed"] == "false"
    assert gate.attributes["threshold.lint_errors"] == "5..9"
    assert {gate.attributes[f"verdict.{m}"] for m in ("tests_passed", "tests_collected")} == {
        "fail"
    }
    final = await get(gateway, run.name)
    passed = int(gate.attributes["metric.tests_passed"])
    assert f"tests_passed = {passed}, below the minimum 1000" in final.error
    assert f"tests_collected = {passed}, above the maximum 0" in final.error
    assert "lint_errors = 0, below the minimum 5" in final.error
    assert not of_type(events, "REWORK_REQUESTED")


async def test_an_unknown_metric_is_rejected_before_anything_runs(
    gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
) -> None:
    workflow = gated(max_rounds=1).replace("tests_passed: {min: 1}", "tests_green: {min: 1}")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(gateway, workflow)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "steps[checks].thresholds" in (caught.value.details() or "")
    assert "unknown metric 'tests_green'" in (caught.value.details() or "")
    listed = await gateway.ListRuns(gateway_pb2.ListRunsRequest(), timeout=10)
    assert list(listed.runs) == []


async def test_a_scheduler_killed_mid_round_resumes_the_round(
    anthropic_stack: LocalStack,
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
    fake_anthropic: FakeAnthropic,
) -> None:
    # Registered first, so it wins: the reworked attempt's first call hangs until the
    # scheduler is gone; the re-sent attempt then gets the fixed package.
    fake_anthropic.push_when("rework round 1", Stall(120))
    script_build(fake_anthropic, WRONG)
    script_build(fake_anthropic, RIGHT)
    run = await create(anthropic_gateway, gated(max_rounds=2))
    await wait_for_event(
        anthropic_gateway, run.name, gateway_pb2.EVENT_TYPE_REWORK_REQUESTED, timeout=60
    )
    assert await fake_anthropic.wait_for_requests_async(3, within=30)

    await anthropic_stack.kill_service(SCHEDULER)
    await anthropic_stack.start_service(SCHEDULER)
    events = await collect_events(anthropic_gateway, run.name, timeout=120)

    assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    (lost,) = of_type(events, "ATTEMPT_LOST")
    assert (lost.step_id, lost.attributes["attempt"]) == ("build", "2")
    assert len(of_type(events, "REWORK_REQUESTED")) == 1  # the round was not started twice
    gates = of_type(events, "GATE_EVALUATED")
    assert [(g.attributes["round"], g.attributes["passed"]) for g in gates] == [
        ("0", "false"),
        ("1", "true"),
    ]
    # The re-sent attempt was told the same feedback, read back from the store.
    resent = fake_anthropic.requests[3].body
    assert "rework round 1 of 2" in user_text(resent)
    assert "tests_failed = 1, above the maximum 0" in user_text(resent)
    final = await get(anthropic_gateway, run.name)
    assert {s.step_id: s.round for s in final.steps} == {"build": 1, "checks": 1}


CHANGES = {
    "summary": "Not ready: add() subtracts.",
    "verdict": "changes_requested",
    "assessment": "One serious gap.",
    "findings": [
        {
            "severity": "high",
            "path": "app/calc.py",
            "line": 2,
            "title": "Wrong operator",
            "detail": "add() returns a - b.",
            "fix": "Return a + b.",
        }
    ],
    "strengths": [],
}
APPROVE = {**CHANGES, "summary": "Good.", "verdict": "approve", "findings": []}
REVIEWED = """\
name: reviewed
retry: {max_attempts: 1}
steps:
  - id: build
    persona: backend_developer
  - id: review
    persona: code_reviewer
    depends_on: [build]
    on_fail: {rework: [build], max_rounds: %d}
"""


@pytest.mark.parametrize("fixed", [True, False])
async def test_a_blocking_review_sends_work_back_like_a_gate(
    anthropic_gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
    fake_anthropic: FakeAnthropic,
    fixed: bool,
) -> None:
    script_build(fake_anthropic, WRONG)
    script_build(fake_anthropic, RIGHT if fixed else WRONG)
    fake_anthropic.push_when("code reviewer", JsonAnswer(CHANGES))
    fake_anthropic.push_when("code reviewer", JsonAnswer(APPROVE if fixed else CHANGES))
    run = await create(anthropic_gateway, REVIEWED % 1)
    events = await collect_events(anthropic_gateway, run.name, timeout=120)

    (rework,) = of_type(events, "REWORK_REQUESTED")
    assert (rework.step_id, rework.attributes["steps"]) == ("review", "build,review")
    # The findings were the feedback of the reworked build.
    builds = [r.body for r in fake_anthropic.requests if "backend developer" in json.dumps(r.body)]
    assert "Wrong operator" in user_text(builds[2]) and "Return a + b." in user_text(builds[2])
    final = await get(anthropic_gateway, run.name)
    if fixed:
        assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
        assert {s.step_id: s.round for s in final.steps} == {"build": 1, "review": 1}
    else:
        assert event_type_name(events[-1]) == "RUN_FAILED"
        assert "review 'review' failed in round 1 after 1 rework round" in final.error
        assert "changes requested" in final.error


async def test_an_unreachable_sandbox_is_a_platform_fault_never_a_pass(
    tmp_path: Path, database_url: str
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    env = {**FAST_RETRIES, "MAESTRO_SCHEDULER_SANDBOX_ADDRESS": dead}
    workflow = """\
name: unreachable
steps:
  - {id: build, persona: backend_developer}
  - id: checks
    kind: gate
    depends_on: [build]
    timeout: 2s
    deadline: 4s
    checks: [pytest]
    thresholds: {tests_failed: {max: 0}}
"""
    async with LocalStack(
        tmp_path / "stack", provider="offline", database_url=database_url, extra_env=env
    ) as stack:
        channel = gateway_channel(stack)
        stub = gateway_pb2_grpc.MaestroServiceStub(channel)
        run = await create(stub, workflow)
        events = await collect_events(stub, run.name, timeout=60)
        final = await get(stub, run.name)
        await channel.close(None)

    assert event_type_name(events[-1]) == "RUN_FAILED"
    lost = of_type(events, "ATTEMPT_LOST")
    assert lost and all(e.step_id == "checks" for e in lost)
    assert all(e.attributes["attempt"] == "1" for e in lost)  # no attempt consumed
    assert not of_type(events, "GATE_EVALUATED")
    checks = {s.step_id: s for s in final.steps}["checks"]
    assert checks.state == gateway_pb2.STEP_STATE_FAILED
    assert checks.attempts == 1
    assert "the sandbox is unavailable" in checks.error and "deadline" in checks.error

"""Approval steps through every real service: a run waits for a person, durably, and
goes on, reworks or stops on their word, or on its timeout."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.ask import ask_decision
from maestro.cli.credentials import read_local_token
from maestro.cli.gateway_client import GatewayClient
from maestro.cli.options import GatewayTarget
from maestro.cli.run_cmd import client_for
from maestro.cli.stack import SCHEDULER, LocalStack
from tests.e2e.channels import gateway_channel
from tests.e2e.events import collect_events, event_type_name

FLOW = """\
name: approved
steps:
  - {{id: design, persona: solution_architect}}
  - id: sign-off
    kind: approval
    depends_on: [design]
    prompt: Check the architecture before anything is built.
    timeout: {timeout}
    on_timeout: {on_timeout}
{on_reject}
  - {{id: build, persona: backend_developer, depends_on: [sign-off]}}
"""


def flow(timeout: str = "1h", on_timeout: str = "reject", rework: bool = True) -> str:
    on_reject = "    on_reject: {rework: [design], max_rounds: 2}" if rework else ""
    return FLOW.format(timeout=timeout, on_timeout=on_timeout, on_reject=on_reject)


if TYPE_CHECKING:
    Stub = gateway_pb2_grpc.MaestroServiceAsyncStub


async def create(stub: Stub, workflow_yaml: str) -> gateway_pb2.Run:
    return await stub.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_yaml=workflow_yaml, requirement="a todo list", request_id=uuid.uuid4().hex
        ),
        timeout=10,
    )


async def get(stub: Stub, name: str) -> gateway_pb2.Run:
    return await stub.GetRun(gateway_pb2.GetRunRequest(name=name), timeout=10)


def step_of(run: gateway_pb2.Run, step_id: str) -> gateway_pb2.Step:
    (step,) = [s for s in run.steps if s.step_id == step_id]
    return step


async def approve(
    stub: Stub, run: str, comment: str = "", request_id: str = ""
) -> gateway_pb2.Step:
    return await stub.ApproveStep(
        gateway_pb2.ApproveStepRequest(
            name=f"{run}/steps/sign-off", comment=comment, request_id=request_id
        ),
        timeout=10,
    )


async def reject(stub: Stub, run: str, comment: str) -> gateway_pb2.Step:
    return await stub.RejectStep(
        gateway_pb2.RejectStepRequest(name=f"{run}/steps/sign-off", comment=comment),
        timeout=10,
    )


def of_type(events: list[gateway_pb2.RunEvent], name: str) -> list[gateway_pb2.RunEvent]:
    return [e for e in events if event_type_name(e) == name]


async def wait_asked(stub: Stub, run: str, rounds: int = 1) -> gateway_pb2.RunEvent:
    """Waits for the `rounds`-th APPROVAL_REQUESTED of the run."""
    seen: list[gateway_pb2.RunEvent] = []
    while len(of_type(seen, "APPROVAL_REQUESTED")) < rounds:
        after = seen[-1].sequence if seen else 0
        call = stub.StreamRunEvents(
            gateway_pb2.StreamRunEventsRequest(name=run, after_sequence=after), timeout=60
        )
        async for event in call:
            seen.append(event)
            if event_type_name(event) == "APPROVAL_REQUESTED":
                call.cancel()
                break
    return of_type(seen, "APPROVAL_REQUESTED")[-1]


async def test_an_approved_step_lets_the_run_go_on(gateway: Stub) -> None:
    run = await create(gateway, flow())
    asked = await wait_asked(gateway, run.name)
    assert asked.step_id == "sign-off"
    assert asked.attributes["prompt"] == "Check the architecture before anything is built."
    assert "docs/architecture.md" in asked.attributes["artifacts"].split(", ")
    assert (asked.attributes["on_timeout"], asked.attributes["timeout_seconds"]) == (
        "reject",
        "3600",
    )
    waiting = await get(gateway, run.name)
    assert step_of(waiting, "sign-off").state == gateway_pb2.STEP_STATE_WAITING_APPROVAL
    assert step_of(waiting, "build").state == gateway_pb2.STEP_STATE_PENDING
    listed = await gateway.ListRuns(
        gateway_pb2.ListRunsRequest(waiting_for_decision=True), timeout=10
    )
    assert [r.name for r in listed.runs] == [run.name]

    step = await approve(gateway, run.name, comment="looks right")
    assert step.step_id == "sign-off"
    events = await collect_events(gateway, run.name)

    assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
    (approved,) = of_type(events, "STEP_APPROVED")
    assert approved.attributes["comment"] == "looks right"
    assert approved.attributes["decided_by"]  # the caller's identity
    final = await get(gateway, run.name)
    assert step_of(final, "build").state == gateway_pb2.STEP_STATE_SUCCEEDED
    assert "approved by" in step_of(final, "sign-off").summary
    none_waiting = await gateway.ListRuns(
        gateway_pb2.ListRunsRequest(waiting_for_decision=True), timeout=10
    )
    assert list(none_waiting.runs) == []


async def test_a_rejection_reworks_then_an_approval_goes_on(gateway: Stub) -> None:
    run = await create(gateway, flow())
    await wait_asked(gateway, run.name)
    await reject(gateway, run.name, "Name the queue's failure modes.")
    asked_again = await wait_asked(gateway, run.name, rounds=2)
    assert asked_again.attributes["round"] == "1"
    during = await get(gateway, run.name)
    assert step_of(during, "design").round == 1
    assert step_of(during, "design").attempts == 2
    await approve(gateway, run.name)
    events = await collect_events(gateway, run.name)

    assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
    (rejected,) = of_type(events, "STEP_REJECTED")
    assert rejected.attributes["comment"] == "Name the queue's failure modes."
    (rework,) = of_type(events, "REWORK_REQUESTED")
    assert rework.attributes["steps"] == "design,sign-off"
    assert "Name the queue's failure modes." in rework.attributes["reason"]


async def test_a_rejection_without_rework_fails_the_run_naming_step_and_comment(
    gateway: Stub,
) -> None:
    run = await create(gateway, flow(rework=False))
    await wait_asked(gateway, run.name)
    await reject(gateway, run.name, "Wrong database.")
    events = await collect_events(gateway, run.name)

    assert event_type_name(events[-1]) == "RUN_FAILED"
    final = await get(gateway, run.name)
    assert "sign-off" in final.error and "Wrong database." in final.error
    assert step_of(final, "build").state == gateway_pb2.STEP_STATE_BLOCKED


@pytest.mark.parametrize("on_timeout", ["approve", "reject"])
async def test_a_timeout_decides_as_the_workflow_says(gateway: Stub, on_timeout: str) -> None:
    run = await create(gateway, flow(timeout="1s", on_timeout=on_timeout, rework=False))
    events = await collect_events(gateway, run.name)

    decided = of_type(events, "STEP_APPROVED" if on_timeout == "approve" else "STEP_REJECTED")
    assert [e.attributes["decided_by"] for e in decided] == ["timeout"]
    assert f"on_timeout: {on_timeout}" in decided[0].attributes["comment"]
    expected = "RUN_SUCCEEDED" if on_timeout == "approve" else "RUN_FAILED"
    assert event_type_name(events[-1]) == expected


async def test_a_killed_scheduler_keeps_waiting_and_its_timers(
    offline_stack: LocalStack, gateway: Stub
) -> None:
    waits = await create(gateway, flow())
    times_out = await create(gateway, flow(timeout="4s", rework=False))
    await wait_asked(gateway, waits.name)
    await wait_asked(gateway, times_out.name)

    await offline_stack.kill_service(SCHEDULER)
    # Still waiting while no scheduler runs; a decision made now (the CLI's client,
    # which retries UNAVAILABLE with one request id) is honoured once it is back.
    still = await get(gateway, waits.name)
    assert step_of(still, "sign-off").state == gateway_pb2.STEP_STATE_WAITING_APPROVAL
    token = read_local_token(offline_stack.data_dir)
    async with GatewayClient(offline_stack.gateway_address, token=token) as client:
        deciding = asyncio.create_task(
            client.decide_step(
                waits.name,
                "sign-off",
                approve=True,
                comment="while the scheduler was down",
                request_id=uuid.uuid4().hex,
            )
        )
        await asyncio.sleep(1.0)
        assert not deciding.done()  # it waits for the scheduler, it did not give up
        await offline_stack.start_service(SCHEDULER)
        decided = await deciding
    assert decided.step_id == "sign-off"
    events = await collect_events(gateway, waits.name)
    assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
    assert len(of_type(events, "APPROVAL_REQUESTED")) == 1
    # The other's timer survived the restart and fired.
    other = await collect_events(gateway, times_out.name)
    assert event_type_name(other[-1]) == "RUN_FAILED"
    (timed_out,) = of_type(other, "STEP_REJECTED")
    assert timed_out.attributes["decided_by"] == "timeout"


async def test_bad_decisions_get_their_codes_and_change_nothing(gateway: Stub) -> None:
    run = await create(gateway, flow())
    await wait_asked(gateway, run.name)

    async def code_of(call: object) -> grpc.StatusCode:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call  # type: ignore[misc]
        return caught.value.code()

    # Not waiting: a step that already ran, and one not reached yet.
    for step in ("design", "build"):
        request = gateway_pb2.ApproveStepRequest(name=f"{run.name}/steps/{step}")
        assert await code_of(gateway.ApproveStep(request, timeout=10)) == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
    missing_step = gateway_pb2.ApproveStepRequest(name=f"{run.name}/steps/ghost")
    assert await code_of(gateway.ApproveStep(missing_step, timeout=10)) == (
        grpc.StatusCode.NOT_FOUND
    )
    unknown = gateway_pb2.ApproveStepRequest(name="runs/0123456789abcdef/steps/sign-off")
    assert await code_of(gateway.ApproveStep(unknown, timeout=10)) == grpc.StatusCode.NOT_FOUND
    no_comment = gateway_pb2.RejectStepRequest(name=f"{run.name}/steps/sign-off")
    assert await code_of(gateway.RejectStep(no_comment, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    before = await get(gateway, run.name)
    assert step_of(before, "sign-off").state == gateway_pb2.STEP_STATE_WAITING_APPROVAL

    # The same request twice is one decision; a second decision is refused.
    request_id = uuid.uuid4().hex
    await approve(gateway, run.name, request_id=request_id)
    await approve(gateway, run.name, request_id=request_id)
    assert await code_of(reject(gateway, run.name, "too late")) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    events = await collect_events(gateway, run.name)
    assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
    assert len(of_type(events, "STEP_APPROVED")) == 1
    assert not of_type(events, "STEP_REJECTED")


async def _maestro(*args: str, cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "MAESTRO_GATEWAY")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maestro.cli",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_lists_waiting_runs_and_decides(
    offline_stack: LocalStack, gateway: Stub, tmp_path: Path
) -> None:
    run = await create(gateway, flow(rework=False))
    await wait_asked(gateway, run.name)
    token = read_local_token(offline_stack.data_dir)
    assert token is not None
    where = ("--gateway", offline_stack.gateway_address, "--token", token)
    run_id = run.name.removeprefix("runs/")

    code, out, err = await _maestro("runs", "list", "--waiting", "--json", *where, cwd=tmp_path)
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)["runs"]] == [run.name]
    code, _, err = await _maestro("runs", "reject", run_id, "sign-off", *where, cwd=tmp_path)
    assert code == 2 and "--comment" in err  # a rejection says what is wrong
    code, out, err = await _maestro(
        "runs", "approve", run_id, "sign-off", "--comment", "fine", *where, cwd=tmp_path
    )
    assert code == 0, err
    assert out.startswith(f"approved: {run.name}/steps/sign-off")
    code, _, err = await _maestro("runs", "approve", run_id, "sign-off", *where, cwd=tmp_path)
    assert code != 0
    assert "already decided" in err or "not waiting" in err
    events = await collect_events(gateway, run.name)
    assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
    (approved,) = of_type(events, "STEP_APPROVED")
    assert approved.attributes["comment"] == "fine"


async def test_an_interactive_run_asks_and_sends_the_answer(
    offline_stack: LocalStack, gateway: Stub
) -> None:
    run = await create(gateway, flow())
    await wait_asked(gateway, run.name)
    answers = iter(["maybe", "c", "ship it", "y"])
    asked: list[str] = []
    said: list[str] = []

    async def typed(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    target = GatewayTarget(
        offline_stack.gateway_address, token=read_local_token(offline_stack.data_dir)
    )
    async with client_for(target) as client:
        await ask_decision(client, run.name, "sign-off", said.append, read=typed)

    assert asked[0].startswith("approve sign-off? [y]es, [n]o")
    assert said == ["answer y, n or c", "approved sign-off"]
    events = await collect_events(gateway, run.name)
    assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
    (approved,) = of_type(events, "STEP_APPROVED")
    assert approved.attributes["comment"] == "ship it"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_decision_through_another_scheduler_is_applied_by_the_owner(
    tmp_path: Path, database_url: str
) -> None:
    # The gateway spreads calls over both schedulers: some decisions land on the one
    # that does not drive the run, which only records them; the owner finds them.
    async with LocalStack(
        tmp_path / "stack", provider="offline", database_url=database_url, schedulers=2
    ) as stack:
        channel = gateway_channel(stack)
        stub = gateway_pb2_grpc.MaestroServiceStub(channel)
        runs = [await create(stub, flow()) for _ in range(6)]
        for run in runs:
            await wait_asked(stub, run.name)
        for run in runs:
            await approve(stub, run.name, comment="through either scheduler")
        histories = [await collect_events(stub, run.name, timeout=60) for run in runs]
        await channel.close(None)
    for events in histories:
        assert event_type_name(events[-1]) == "RUN_SUCCEEDED"
        assert len(of_type(events, "STEP_APPROVED")) == 1
    owners = {
        e.attributes["scheduler"] for events in histories for e in of_type(events, "RUN_STARTED")
    }
    assert len(owners) == 2  # both schedulers drove runs

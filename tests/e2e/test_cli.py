"""The `maestro` command as a user runs it: a real local stack, real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.stack import LocalStack
from tests.e2e.channels import gateway_channel
from tests.e2e.events import collect_events
from tests.fakes.anthropic_server import FakeAnthropic


async def _maestro(*args: str, cwd: Path, timeout: float = 180) -> tuple[int, str, str]:
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
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_maestro_run_completes_a_run_and_writes_the_artifacts(tmp_path: Path) -> None:
    code, out, err = await _maestro(
        "run",
        "--requirement",
        "A REST API with user registration and login",
        "--out",
        str(tmp_path / "out"),
        "--json",
        cwd=tmp_path,
    )
    assert code == 0, err
    assert "offline" in err  # no key: the offline provider, and the user is told
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    events, final = lines[:-1], lines[-1]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "RUN_SUCCEEDED"
    assert all(e["time"].endswith("Z") for e in events)
    assert final["run"]["state"] == "SUCCEEDED"
    out_dir = Path(final["artifacts_dir"])
    assert (out_dir / "docs" / "requirements.md").is_file()
    assert any((out_dir / "app").iterdir())


async def test_maestro_run_rejects_a_bad_workflow_file_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - {id: a, persona: wizard}\n")
    code, _, err = await _maestro("run", str(bad), "--requirement", "x", cwd=tmp_path)
    assert code == 2
    assert "wizard" in err
    assert not (tmp_path / ".maestro").exists()  # nothing was started


async def test_ctrl_c_cancels_the_run_and_stops_the_local_stack(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_default_delay(60)  # the first step is still thinking at Ctrl-C
    env = {
        **{k: v for k, v in os.environ.items() if k != "MAESTRO_GATEWAY"},
        "ANTHROPIC_API_KEY": "test-key",
        "MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake_anthropic.base_url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maestro.cli",
        "run",
        "--requirement",
        "a todo API",
        "--json",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    # Read both pipes all along, so neither can fill up while we wait for the fake.
    output = asyncio.create_task(proc.stdout.read())
    errors = asyncio.create_task(proc.stderr.read())
    assert await fake_anthropic.wait_for_requests_async(1, within=60)
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 30)
    out, err = await output, await errors
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]

    assert proc.returncode == 1, err.decode()
    events, final = lines[:-1], lines[-1]
    assert events[-1]["type"] == "RUN_CANCELLED"
    assert final["run"]["state"] == "CANCELLED"
    assert "cancelling" in err.decode()
    # The stack it started is gone: its gateway port no longer answers.
    address = re.search(r"gateway listening on 127\.0\.0\.1:(\d+)", err.decode())
    assert address is not None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(address.group(1)))) != 0


async def _port_closes(port: int, within: float) -> bool:
    """Whether nothing listens on the port any more, checked until `within` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return True
        await asyncio.sleep(0.05)
    return False


async def test_services_exit_when_maestro_up_is_killed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "MAESTRO_GATEWAY")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maestro.cli",
        "up",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]

    proc.kill()  # no chance to stop its services: they must notice on their own
    await proc.wait()
    assert await _port_closes(port, within=15)
    # The scheduler released its writer lock: a new stack can start on the same data.
    code, _, err = await _maestro("run", "sdlc-linear", "--requirement", "x", cwd=tmp_path)
    assert code == 0, err


async def test_events_after_the_end_of_a_finished_run_print_nothing_and_succeed(
    tmp_path: Path,
) -> None:
    code, out, err = await _maestro(
        "run",
        "sdlc-linear",
        "--requirement",
        "x",
        "--json",
        "--out",
        str(tmp_path / "o"),
        cwd=tmp_path,
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    run_name, last = lines[-1]["run"]["name"], lines[-2]["sequence"]
    async with LocalStack(tmp_path / ".maestro", provider="offline") as stack:
        gateway = ("--gateway", stack.gateway_address)
        code, out, err = await _maestro(
            "runs", "events", run_name, "--after", str(last), *gateway, cwd=tmp_path, timeout=15
        )
        assert (code, out) == (0, ""), err
        code, out, _ = await _maestro(
            "runs", "events", run_name, "--after", "2", "--json", *gateway, cwd=tmp_path, timeout=15
        )
        assert code == 0
        assert [json.loads(e)["sequence"] for e in out.splitlines()] == list(range(3, last + 1))


async def test_maestro_run_says_when_it_resumes_runs_left_unfinished(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_default_delay(60)
    env = {
        "ANTHROPIC_API_KEY": "test-key",
        "MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake_anthropic.base_url,
    }
    async with LocalStack(tmp_path / ".maestro", provider="anthropic", extra_env=env) as stack:
        channel = gateway_channel(stack)
        stub = gateway_pb2_grpc.MaestroServiceStub(channel)
        left = await stub.CreateRun(
            gateway_pb2.CreateRunRequest(workflow_name="sdlc-linear", requirement="x"), timeout=10
        )
        assert await fake_anthropic.wait_for_requests_async(1, within=30)
        await channel.close(None)
    # The stack stopped with that run still RUNNING in ./.maestro.
    fake_anthropic.set_default_delay(0)
    code, _, err = await _maestro("run", "sdlc-linear", "--requirement", "y", cwd=tmp_path)
    assert code == 0, err
    assert f"resuming 1 unfinished run from an earlier session in {tmp_path / '.maestro'}" in err
    assert left.name.removeprefix("runs/") in err
    # Before the stack stops, the resumed run is reported: how it ended, or that it stops
    # again with the stack.
    outcome = re.search(rf"resumed run {left.name} (SUCCEEDED|is still RUNNING)", err)
    assert outcome is not None, err


async def test_runs_cancel_without_a_gateway_cancels_an_unfinished_local_run(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_default_delay(60)  # the run stays unfinished
    env = {
        "ANTHROPIC_API_KEY": "test-key",
        "MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake_anthropic.base_url,
    }
    async with LocalStack(tmp_path / ".maestro", provider="anthropic", extra_env=env) as stack:
        channel = gateway_channel(stack)
        stub = gateway_pb2_grpc.MaestroServiceStub(channel)
        left = await stub.CreateRun(
            gateway_pb2.CreateRunRequest(workflow_name="sdlc-linear", requirement="x"), timeout=10
        )
        assert await fake_anthropic.wait_for_requests_async(1, within=30)
        await channel.close(None)
    # No stack runs now: the cancel starts one for itself, which resumes the run first
    # (with the same model, still thinking, so the cancel finds it running).
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maestro.cli",
        "runs",
        "cancel",
        left.name,
        "--json",
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if k != "MAESTRO_GATEWAY"}, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    raw_out, raw_err = await asyncio.wait_for(proc.communicate(), 120)
    out, err = raw_out.decode(), raw_err.decode()
    assert proc.returncode == 0, err
    assert json.loads(out)["state"] == "CANCELLED"
    assert "resuming 1 unfinished run" in err
    code, out, _ = await _maestro("runs", "get", left.name, "--json", cwd=tmp_path)
    assert (code, json.loads(out)["state"]) == (0, "CANCELLED")


ONE_DOCUMENT = """
name: one-document
model: claude-sonnet-5-5
steps:
  - {id: requirements, persona: requirements_analyst}
"""


async def test_maestro_status_shows_each_model_s_limits_use_and_breaker(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    code, _, err = await _maestro("status", cwd=tmp_path, timeout=30)
    assert code == 3 and "no Maestro stack is running" in err
    env = {
        "ANTHROPIC_API_KEY": "test-key",
        "MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "MAESTRO_SCHEDULER_MODEL_LIMITS": json.dumps({"claude-sonnet-5-5": {"rpm": 50}}),
    }
    async with LocalStack(tmp_path / ".maestro", provider="anthropic", extra_env=env) as stack:
        gateway = ("--gateway", stack.gateway_address)
        code, out, err = await _maestro("status", *gateway, cwd=tmp_path, timeout=30)
        assert code == 0, err
        assert "no model calls admitted yet" in out

        channel = gateway_channel(stack)
        stub = gateway_pb2_grpc.MaestroServiceStub(channel)
        run = await stub.CreateRun(
            gateway_pb2.CreateRunRequest(workflow_yaml=ONE_DOCUMENT, requirement="x"), timeout=10
        )
        events = await collect_events(stub, run.name, timeout=60)
        await channel.close(None)
        assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED

        code, out, err = await _maestro("status", "--json", *gateway, cwd=tmp_path, timeout=30)
        assert code == 0, err
        (model,) = json.loads(out)["models"]
        assert model["model"] == "claude-sonnet-5-5"
        assert model["breaker"] == "BREAKER_STATE_CLOSED"
        # The one call the run made is in the minute's window, against the limit set.
        assert (model["requests_used"], model["requests_limit"]) == (1, 50)
        code, out, _ = await _maestro("status", *gateway, cwd=tmp_path, timeout=30)
        assert code == 0
        (row,) = [line for line in out.splitlines() if line.startswith("claude-sonnet-5-5")]
        assert row.split()[1] == "closed" and "1 of 50" in row

"""`maestro` as a person meets it: the live view on a real terminal, plain lines in a pipe,
history without ceremony, inputs refused before anything starts, and exit codes.

Every run here is a real offline run through every service as its own process. The
terminal is a real pseudo-terminal (pexpect); what it shows is read back with a
terminal emulator (pyte), as a person would see the screen when the command ends.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pexpect
import pyte
import pytest

ROWS, COLUMNS = 80, 160  # the plain run, gate metrics included, fits on one screen
LINEAR_STEPS = ("requirements", "architecture", "implementation", "testing", "checks", "review")


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ANTHROPIC_API_KEY", "MAESTRO_GATEWAY", "NO_COLOR")
    }
    env["TERM"] = "xterm-256color"
    env.update(extra)
    return env


def _maestro(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180):
    """Runs `maestro` with its output in pipes (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "maestro.cli", *args],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _on_a_terminal(*args: str, cwd: Path, env: dict[str, str] | None = None):
    """Runs `maestro` on a pseudo-terminal; returns its exit code, the raw output and the
    screen as a terminal shows it at the end."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "maestro.cli", *args],
        cwd=str(cwd),
        env=env or _env(),
        dimensions=(ROWS, COLUMNS),
        encoding="utf-8",
        timeout=180,
    )
    child.expect(pexpect.EOF)
    # The terminal closes as the process exits; close() would signal a process still
    # finishing its exit 0.1 s later (its exit status then None), so wait for it.
    child.wait()
    child.close()
    raw = child.before
    screen = pyte.Screen(COLUMNS, ROWS)
    stream = pyte.Stream(screen)
    # A pty turns "\n" into "\r\n"; the emulator needs both to start a line afresh.
    stream.feed(raw)
    lines = [line.rstrip() for line in screen.display]
    return child.exitstatus, raw, lines


def test_the_live_view_redraws_one_table_showing_every_step_in_its_final_state(
    tmp_path: Path,
) -> None:
    code, raw, screen = _on_a_terminal(
        "run", "sdlc-linear", "--requirement", "A todo API", cwd=tmp_path
    )
    assert code == 0, raw
    # Redrawn in place: the cursor went back up over the table to draw it again.
    assert "\x1b[1A" in raw
    assert "\x1b[2K" in raw
    # The screen at the end: the header, then each step once, in its final state.
    header = [
        line for line in screen if re.match(r"^✓ runs/[0-9a-f]{16}  sdlc-linear  SUCCEEDED", line)
    ]
    assert len(header) == 1, "\n".join(screen)
    assert "(offline)" in header[0]
    table = [line.split() for line in screen if line.startswith("✓  ")]
    assert [row[1] for row in table] == list(LINEAR_STEPS), "\n".join(screen)
    for row in table:
        assert row[3] == "SUCCEEDED" and row[4] == "1"  # state, attempt
        assert re.fullmatch(r"\d+ms|\d+\.\ds", row[5])  # elapsed
        # The gate ran the offline project's checks in the sandbox; the rest are offline.
        assert ("passed:" if row[1] == "checks" else "offline") in row
    columns = next(line for line in screen if "PERSONA" in line).split()
    assert columns == ["STEP", "PERSONA", "STATE", "TRY", "ELAPSED", "TOKENS", "COST", "LATEST"]
    assert not any("STARTED" in line or "progress:" in line for line in screen)
    summary = next(line for line in screen if line.startswith("Run runs/"))
    assert re.search(r": SUCCEEDED in .* \(6 of 6 steps succeeded\)$", summary)
    # The summary ends with what the gate measured.
    gate = screen.index(next(line for line in screen if line.startswith("Gate checks: passed")))
    assert screen[gate + 1].split() == ["METRIC", "VALUE", "THRESHOLD", "VERDICT"]
    assert any(re.match(r"Artifacts: maestro-out/[0-9a-f]{16} \(\d+ files\)$", x) for x in screen)
    # Colours on a terminal (green for success) unless NO_COLOR says otherwise.
    assert "\x1b[32m" in raw


def test_no_color_and_color_never_keep_a_terminal_free_of_colours(tmp_path: Path) -> None:
    code, raw, screen = _on_a_terminal(
        "run", "sdlc-linear", "-r", "x", cwd=tmp_path, env=_env(NO_COLOR="1")
    )
    assert code == 0, raw
    assert "\x1b[32m" not in raw and "\x1b[31m" not in raw
    assert sum(line.startswith("✓  ") for line in screen) == len(LINEAR_STEPS)
    code, raw, _ = _on_a_terminal("run", "sdlc-linear", "-r", "x", "--color", "never", cwd=tmp_path)
    assert code == 0
    assert "\x1b[32m" not in raw


def test_plain_on_a_terminal_and_a_pipe_print_one_line_per_event(tmp_path: Path) -> None:
    code, raw, screen = _on_a_terminal(
        "run", "sdlc-linear", "-r", "x", "--plain", "--color", "never", cwd=tmp_path
    )
    assert code == 0, raw
    assert "\x1b[1A" not in raw  # appended, never redrawn
    started = [
        line
        for line in screen
        if line.endswith("started (requirements_analyst, attempt 1, provider offline)")
    ]
    assert len(started) == 1
    piped = _maestro("run", "sdlc-linear", "-r", "x", cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stdout  # no cursor movement, no colour in a pipe
    lines = piped.stdout.splitlines()
    for step in LINEAR_STEPS:
        assert len([x for x in lines if re.search(rf"\d\d:\d\d:\d\d  {step} +started", x)]) == 1
        assert len([x for x in lines if re.search(rf"  {step} +succeeded in ", x)]) == 1
    assert any(line.endswith("run SUCCEEDED") for line in lines)
    # The full summary table ends the plain output.
    assert any(line.startswith("Run runs/") and ": SUCCEEDED in " in line for line in lines)
    # --color always colours even a pipe.
    coloured = _maestro("run", "sdlc-linear", "-r", "x", "--color", "always", cwd=tmp_path)
    assert coloured.returncode == 0
    assert "\x1b[32m" in coloured.stdout
    assert "\x1b[1A" not in coloured.stdout


def test_runs_list_right_after_a_run_without_a_gateway_lists_it(tmp_path: Path) -> None:
    run = _maestro("run", "sdlc-linear", "-r", "the requirement to find", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    name = json.loads(run.stdout.splitlines()[-1])["run"]["name"]
    run_id = name.removeprefix("runs/")

    listed = _maestro("runs", "list", cwd=tmp_path, timeout=60)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["RUN", "STATE", "WORKFLOW", "CREATED", "DURATION", "REQUIREMENT"]
    assert len(rows) == 1
    assert rows[0].split()[:3] == [run_id, "SUCCEEDED", "sdlc-linear"]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[0])  # local time, seconds
    assert rows[0].endswith("the requirement to find")

    as_json = _maestro("runs", "list", "--json", cwd=tmp_path, timeout=60)
    assert [r["name"] for r in json.loads(as_json.stdout)["runs"]] == [name]
    got = _maestro("runs", "get", run_id, "--json", cwd=tmp_path, timeout=60)
    assert json.loads(got.stdout)["state"] == "SUCCEEDED"
    events = _maestro("runs", "events", run_id, "--json", cwd=tmp_path, timeout=60)
    assert json.loads(events.stdout.splitlines()[-1])["type"] == "RUN_SUCCEEDED"
    out = tmp_path / "again"
    fetched = _maestro("artifacts", run_id, "--out", str(out), "--json", cwd=tmp_path, timeout=60)
    assert fetched.returncode == 0, fetched.stderr
    files = json.loads(fetched.stdout)["files"]
    assert files and all((out / f["artifact_path"]).is_file() for f in files)
    # Reads start no scheduler: nothing was left running, no lock is held.
    assert not list((tmp_path / ".maestro").glob("*.port"))


def test_a_stale_maestro_gateway_is_named_with_the_fix_and_exit_code_3(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free now, and nothing will listen there
    env = _env(MAESTRO_GATEWAY=f"127.0.0.1:{port}")
    result = _maestro("runs", "list", cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 3
    assert f"the gateway at 127.0.0.1:{port} (from MAESTRO_GATEWAY)" in result.stderr
    assert "unset MAESTRO_GATEWAY" in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--out", "a-file"), "--out 'a-file': is a file"),
        (("--provider", "anthropic"), "--provider anthropic: ANTHROPIC_API_KEY is not set"),
        (("--gateway", "127.0.0.1:99999"), "the port must be a number from 1 to 65535"),
        (("--gateway", "http://127.0.0.1:8080"), "give HOST:PORT without a scheme"),
        (("--gateway", "localhost"), "give HOST:PORT"),
        (("no-such-workflow.yaml",), "no-such-workflow.yaml"),
    ],
)
def test_each_bad_input_exits_2_before_anything_starts(
    tmp_path: Path, args: tuple[str, ...], problem: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    result = _maestro("run", *args, "-r", "x", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert problem in result.stderr
    assert not (tmp_path / ".maestro").exists()  # no data directory, so no service either
    assert not (tmp_path / "maestro-out").exists()


def test_every_bad_input_is_listed_at_once(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - {id: a, persona: wizard}\n")
    result = _maestro(
        "run", str(bad), "--out", "a-file", "--provider", "anthropic", "-r", " ", cwd=tmp_path
    )
    assert result.returncode == 2
    err = result.stderr
    assert "error: cannot start the run: 4 problems:" in err
    for problem in ("--requirement", "wizard", "--out 'a-file'", "--provider anthropic"):
        assert problem in err
    assert err.count("error:") == 1
    assert not (tmp_path / ".maestro").exists()
    gateway = _maestro("run", "-r", "x", "--gateway", "http://h:1", "--out", "a-file", cwd=tmp_path)
    assert gateway.returncode == 2
    assert "2 problems" in gateway.stderr


def test_bash_completion_offers_commands_subcommands_and_flags(tmp_path: Path) -> None:
    script = _maestro("completion", "bash", cwd=tmp_path, timeout=30)
    assert script.returncode == 0
    (tmp_path / "maestro.bash").write_text(script.stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(["maestro", *words])
        shell = (
            f"source {tmp_path / 'maestro.bash'}; COMP_WORDS=({line}); "
            f"COMP_CWORD={len(words)}; _maestro; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        done = subprocess.run(
            ["bash", "-c", shell], capture_output=True, text=True, check=True, timeout=30
        )
        return done.stdout.split()

    assert set(complete("r")) == {"run", "runs"}
    assert set(complete("runs", "")) >= {"list", "get", "cancel", "events"}
    assert "--requirement" in complete("run", "--re")
    assert complete("run", "--provider", "") == ["anthropic", "offline"]
    assert complete("run", "--color", "n") == ["never"]
    assert "--after" in complete("runs", "events", "--gateway", "h:1", "--")
    zsh = _maestro("completion", "zsh", cwd=tmp_path, timeout=30).stdout
    assert zsh.startswith("#compdef maestro") and "complete -F _maestro maestro" in zsh
    fish = _maestro("completion", "fish", cwd=tmp_path, timeout=30).stdout
    assert "complete -c maestro -n '__fish_use_subcommand' -a run" in fish
    assert "-l provider -x -a 'anthropic offline'" in fish


def test_run_and_runs_use_a_maestro_up_running_in_the_directory(tmp_path: Path) -> None:
    up = subprocess.Popen(
        [sys.executable, "-m", "maestro.cli", "up"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        line = up.stdout.readline()
        address = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        assert address is not None, line
        run = _maestro("run", "sdlc-linear", "-r", "x", "--json", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert f"using the local stack running in .maestro (gateway {address.group(1)})" in (
            run.stderr
        )
        assert "starting a local Maestro stack" not in run.stderr
        name = json.loads(run.stdout.splitlines()[-1])["run"]["name"]
        listed = _maestro("runs", "list", "--json", cwd=tmp_path, timeout=60)
        assert [r["name"] for r in json.loads(listed.stdout)["runs"]] == [name]
    finally:
        up.send_signal(2)  # Ctrl-C
        _, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    for service in ("gateway", "scheduler", "persona_service", "sandbox_service"):
        assert re.search(rf"  {service} +http://127\.0\.0\.1:\d+/metrics", err), err

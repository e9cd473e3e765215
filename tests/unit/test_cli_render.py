"""Rendering of gateway messages to text and JSON, and safe artifact writing."""

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from maestro.api.gateway.v1 import gateway_pb2 as pb
from maestro.cli.convert import artifact_from_proto, event_from_proto, run_from_proto
from maestro.cli.download import DownloadError, check_content, check_paths, write_new_file
from maestro.cli.models import EventView, run_id, run_name
from maestro.cli.render import (
    EventFormatter,
    event_to_dict,
    format_duration,
    format_outcome,
    format_run,
    format_run_list,
    format_size,
    json_line,
    rfc3339,
    run_to_dict,
)
from maestro.core.errors import InvalidArgument

T0 = datetime(2026, 11, 24, 18, 42, 12, 123456, tzinfo=UTC)


def ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def event(
    seq: int,
    kind: pb.EventType.ValueType,
    step: str = "",
    at: datetime = T0,
    message: str = "",
    **attrs,
):
    return pb.RunEvent(
        run="runs/r1",
        sequence=seq,
        type=kind,
        step_id=step,
        time=ts(at),
        message=message,
        attributes=attrs,
    )


def failed_run() -> pb.Run:
    ok = pb.Step(
        name="runs/r1/steps/requirements",
        step_id="requirements",
        persona="requirements_analyst",
        state=pb.STEP_STATE_SUCCEEDED,
        attempts=1,
        start_time=ts(T0),
        end_time=ts(T0 + timedelta(seconds=1.5)),
        usage=pb.TokenUsage(
            input_tokens=1200, output_tokens=300, cache_read_input_tokens=7, cost_usd=0.0125
        ),
        provider="anthropic",
        model="claude-x",
    )
    bad = pb.Step(
        name="runs/r1/steps/architecture",
        step_id="architecture",
        persona="solution_architect",
        depends_on=["requirements"],
        state=pb.STEP_STATE_FAILED,
        attempts=2,
        start_time=ts(T0 + timedelta(seconds=2)),
        end_time=ts(T0 + timedelta(seconds=5)),
        error="model returned no files",
        usage=pb.TokenUsage(input_tokens=10, output_tokens=5),
    )
    return pb.Run(
        name="runs/r1",
        workflow="sdlc-linear",
        requirement="a todo app",
        state=pb.RUN_STATE_FAILED,
        steps=[ok, bad],
        create_time=ts(T0),
        start_time=ts(T0),
        end_time=ts(T0 + timedelta(seconds=5)),
        error="step 'architecture' failed: model returned no files",
        provider="anthropic",
    )


def test_step_event_json_has_every_field_with_rfc3339_utc_time():
    view = event_from_proto(
        event(7, pb.EVENT_TYPE_STEP_STARTED, "architecture", message="started", attempt="2")
    )
    out = json.loads(json_line(event_to_dict(view)))
    assert out == {
        "run": "runs/r1",
        "sequence": 7,
        "type": "STEP_STARTED",
        "step": "architecture",
        "time": "2026-11-24T18:42:12.123456Z",
        "message": "started",
        "attributes": {"attempt": "2"},
    }


def test_run_event_json_has_no_step_and_unknown_types_keep_their_number():
    view = event_from_proto(event(1, pb.EVENT_TYPE_RUN_SUCCEEDED))
    out = event_to_dict(view)
    assert "step" not in out
    assert out["type"] == "RUN_SUCCEEDED"
    assert view.is_terminal
    future = event_from_proto(event(2, pb.EventType.ValueType(99)))
    assert future.type == "UNKNOWN_99"
    assert not future.is_terminal


def test_unset_event_time_is_null_in_json():
    view = event_from_proto(pb.RunEvent(run="runs/r1", sequence=1, type=pb.EVENT_TYPE_RUN_CREATED))
    assert view.time is None
    assert event_to_dict(view)["time"] is None


def test_rfc3339_converts_other_zones_to_utc_z():
    plus_two = datetime(2026, 1, 2, 5, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(plus_two) == "2026-01-02T03:00:00.000000Z"
    assert rfc3339(None) is None


def test_run_json_has_states_without_prefix_times_steps_and_usage():
    out = json.loads(json_line(run_to_dict(run_from_proto(failed_run()))))
    assert out["name"] == "runs/r1"
    assert out["id"] == "r1"
    assert out["workflow"] == "sdlc-linear"
    assert out["state"] == "FAILED"
    assert out["error"] == "step 'architecture' failed: model returned no files"
    assert out["create_time"] == "2026-11-24T18:42:12.123456Z"
    assert out["end_time"] == "2026-11-24T18:42:17.123456Z"
    assert out["duration_seconds"] == 5.0
    assert out["usage"] == {
        "input_tokens": 1210,
        "output_tokens": 305,
        "cache_read_tokens": 7,
        "cache_write_tokens": 0,
        "cost_usd": 0.0125,
    }
    first, second = out["steps"]
    assert first["step_id"] == "requirements"
    assert first["state"] == "SUCCEEDED"
    assert first["attempts"] == 1
    assert first["start_time"] == "2026-11-24T18:42:12.123456Z"
    assert first["end_time"] == "2026-11-24T18:42:13.623456Z"
    assert first["duration_seconds"] == 1.5
    assert (first["provider"], first["model"]) == ("anthropic", "claude-x")
    assert first["usage"] == {
        "input_tokens": 1200,
        "output_tokens": 300,
        "cache_read_tokens": 7,
        "cache_write_tokens": 0,
        "cost_usd": 0.0125,
    }
    assert second["state"] == "FAILED"
    assert second["depends_on"] == ["requirements"]
    assert second["error"] == "model returned no files"


def test_run_json_unset_times_are_null():
    pending = run_from_proto(
        pb.Run(
            name="runs/r2",
            workflow="w",
            state=pb.RUN_STATE_PENDING,
            create_time=ts(T0),
            steps=[pb.Step(step_id="a", persona="qa_engineer", state=pb.STEP_STATE_PENDING)],
        )
    )
    out = run_to_dict(pending)
    assert out["state"] == "PENDING"
    assert (out["start_time"], out["end_time"], out["duration_seconds"]) == (None, None, None)
    assert out["steps"][0]["start_time"] is None
    assert out["steps"][0]["duration_seconds"] is None


def test_run_summary_text_shows_state_steps_error_artifacts_and_tokens():
    text = format_run(run_from_proto(failed_run()), artifacts_dir="out/r1", artifacts=3)
    lines = text.splitlines()
    assert lines[0] == "Run runs/r1: FAILED in 5.0s (workflow sdlc-linear)"
    assert lines[1].split() == ["STEP", "PERSONA", "STATE", "ATTEMPTS", "DURATION", "PROVIDER"]
    assert lines[2].split() == [
        "requirements",
        "requirements_analyst",
        "SUCCEEDED",
        "1",
        "1.5s",
        "anthropic",
        "(claude-x)",
    ]
    assert lines[3].split()[:5] == ["architecture", "solution_architect", "FAILED", "2", "3.0s"]
    assert "  architecture: model returned no files" in lines
    # One error prefix on the command line ("error:"); the run's own reason says its state.
    assert "Failed: step 'architecture' failed: model returned no files" in lines
    assert "Artifacts: out/r1 (3 files)" in lines
    assert (
        lines[-1]
        == "Tokens: 1,210 in + 305 out = 1,515 tokens (+ 7 cache reads, 0 cache writes), $0.0125"
    )
    one = format_run(run_from_proto(failed_run()), artifacts_dir="out/r1", artifacts=1)
    assert "Artifacts: out/r1 (1 file)" in one.splitlines()


def test_run_list_text_has_one_row_per_run():
    text = format_run_list([run_from_proto(failed_run())])
    header, row = text.splitlines()
    assert header.split() == ["RUN", "STATE", "WORKFLOW", "CREATED", "DURATION", "REQUIREMENT"]
    local = T0.astimezone()  # the machine's zone, with seconds
    created = [local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S")]
    assert row.split() == ["r1", "FAILED", "sdlc-linear", *created, "5.0s", "a", "todo", "app"]
    assert format_run_list([]) == "no runs"


def _line(formatter: EventFormatter, message: pb.RunEvent) -> str:
    line = formatter.format(event_from_proto(message))
    clock = message.time.ToDatetime(tzinfo=UTC).astimezone().strftime("%H:%M:%S")
    assert line.startswith(f"{clock}  ")
    return line[len(clock) + 2 :]


def test_event_lines_say_what_happened_for_each_step():
    f = EventFormatter(step_width=8)
    start = event(
        3,
        pb.EVENT_TYPE_STEP_STARTED,
        "arch",
        attempt="1",
        requested_provider="offline",
        persona="qa",
    )
    assert _line(f, start) == "arch      started (qa, attempt 1, provider offline)"
    wrote = event(4, pb.EVENT_TYPE_ARTIFACT_RECORDED, "arch", path="docs/a.md", size_bytes="2048")
    assert _line(f, wrote) == "arch      wrote docs/a.md (2.0 KiB)"
    done = event(
        5,
        pb.EVENT_TYPE_STEP_SUCCEEDED,
        "arch",
        at=T0 + timedelta(seconds=83),
        provider="anthropic",
        model="claude-x",
        input_tokens="1000",
        output_tokens="234",
    )
    assert _line(f, done) == "arch      succeeded in 1m23s (anthropic (claude-x), 1,234 tokens)"
    failed = event(6, pb.EVENT_TYPE_STEP_FAILED, "qa", message="qa failed", error="timed out")
    assert _line(f, failed) == "qa        FAILED: timed out"
    retry = event(7, pb.EVENT_TYPE_STEP_RETRY_SCHEDULED, "qa", message="upstream 529", attempt="1")
    assert _line(f, retry) == "qa        retry scheduled (attempt 1 failed): upstream 529"
    blocked = event(8, pb.EVENT_TYPE_STEP_BLOCKED, "doc", message="dependency qa failed")
    assert _line(f, blocked) == "doc       blocked: dependency qa failed"


def test_event_lines_do_not_repeat_the_server_message():
    f = EventFormatter(step_width=3)
    created = event(1, pb.EVENT_TYPE_RUN_CREATED, message="run created: workflow w, 2 steps")
    assert _line(f, created) == "run  run created: workflow w, 2 steps"
    assert _line(f, event(9, pb.EVENT_TYPE_RUN_SUCCEEDED, message="run succeeded")) == (
        "run  run SUCCEEDED"
    )
    cancelled = event(5, pb.EVENT_TYPE_STEP_CANCELLED, "qa", message="qa cancelled")
    assert _line(f, cancelled) == "qa   cancelled"


def test_success_without_a_known_start_has_no_duration():
    line = EventFormatter().format(
        EventView(run="runs/r", sequence=1, type="STEP_SUCCEEDED", step_id="s", time=T0)
    )
    assert line.endswith("s                     succeeded")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0349, "35ms"), (12.34, "12.3s"), (125, "2m05s"), (3720, "1h02m")],
)
def test_durations_read_naturally(seconds, text):
    assert format_duration(timedelta(seconds=seconds)) == text


def test_sizes_read_naturally():
    assert [format_size(n) for n in (812, 1536, 3 * 1024 * 1024)] == ["812 B", "1.5 KiB", "3.0 MiB"]


def test_run_names_accept_ids_and_names_and_reject_others():
    assert run_name("abc") == "runs/abc"
    assert run_name("runs/abc") == "runs/abc"
    assert run_id("runs/abc") == "abc"
    for bad in ("", "runs/", "a/b", "runs/a/artifacts/x"):
        with pytest.raises(InvalidArgument):
            run_name(bad)


def test_artifact_conversion_keeps_content_and_metadata():
    view = artifact_from_proto(
        pb.Artifact(
            name="runs/r1/artifacts/app/x.py", path="app/x.py", step_id="backend", content=b"x=1"
        )
    )
    assert (view.path, view.step_id, view.content, view.create_time) == (
        "app/x.py",
        "backend",
        b"x=1",
        None,
    )


def test_artifacts_are_written_under_the_output_directory_and_never_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    write_new_file(out, "app/pkg/mod.py", b"print(1)\n")
    written = out / "app" / "pkg" / "mod.py"
    assert written.read_bytes() == b"print(1)\n"
    # Model output never replaces a file: the second write fails and changes nothing.
    with pytest.raises(FileExistsError):
        write_new_file(out, "app/pkg/mod.py", b"print(2)\n")
    assert written.read_bytes() == b"print(1)\n"
    # Nothing but the file itself: no temporary files left behind.
    assert sorted(p.name for p in written.parent.iterdir()) == ["mod.py"]


@pytest.mark.parametrize(
    "bad",
    [
        "/etc/passwd",
        "../escape.txt",
        "app/../../escape.txt",
        "C:/x",
        "a\\b",
        "",
        ".",
        ".git/config",
        "sub/.GIT/hooks/pre-commit",
        ".gitmodules",
        "con.txt",
        "docs/read\u202eme.md",
        "a\x1b[2Jb",
    ],
)
def test_unsafe_artifact_paths_are_rejected(tmp_path, bad):
    with pytest.raises(DownloadError):
        check_paths([bad])
    assert not (tmp_path / "escape.txt").exists()


def test_a_symlink_in_the_output_directory_cannot_redirect_a_write(tmp_path):
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "docs").symlink_to(outside, target_is_directory=True)
    (out / "link.md").symlink_to(outside / "target.md")
    with pytest.raises(OSError):
        write_new_file(out, "docs/readme.md", b"x")
    with pytest.raises(FileExistsError):
        write_new_file(out, "link.md", b"x")
    assert list(outside.iterdir()) == []


def test_content_must_match_its_checksum():
    digest = hashlib.sha256(b"data").hexdigest()
    check_content("a.txt", b"data", digest)
    check_content("a.txt", b"data", "")  # no checksum recorded: nothing to compare
    with pytest.raises(DownloadError, match="a.txt"):
        check_content("a.txt", b"tampered", digest)


def test_run_json_line_is_one_line_and_keeps_unicode():
    run = run_from_proto(pb.Run(name="runs/r", workflow="w", requirement="café ☕"))
    line = json_line(run_to_dict(run))
    assert "\n" not in line
    assert json.loads(line)["requirement"] == "café ☕"
    assert json.loads(line)["state"] == "UNSPECIFIED"


def test_a_run_summary_ends_with_each_gates_metrics() -> None:
    gate = pb.Step(
        step_id="checks",
        kind="gate",
        state=pb.STEP_STATE_FAILED,
        round=2,
        error="gate 'checks' failed in round 2 after 2 rework rounds: tests_failed = 3",
        gate_metrics=[
            pb.GateMetric(
                metric="tests_passed", measured=True, value=4, threshold=">= 1", passed=True
            ),
            pb.GateMetric(metric="tests_failed", measured=True, value=3, threshold="<= 0"),
            pb.GateMetric(metric="lint_errors", measured=False, threshold="<= 0"),
        ],
    )
    run = run_from_proto(pb.Run(name="runs/r1", state=pb.RUN_STATE_FAILED, steps=[gate]))
    for text in (format_run(run), format_outcome(run)):
        lines = text.splitlines()
        assert lines[-5].startswith("Gate checks: failed, after 2 rework rounds")
        assert lines[-3].split() == ["tests_passed", "4", ">=", "1", "ok"]
        assert lines[-2].split() == ["tests_failed", "3", "<=", "0", "MISSED"]
        assert lines[-1].split() == ["lint_errors", "missing", "<=", "0", "MISSED"]
    (row,) = [line for line in format_run(run).splitlines() if line.startswith("  checks ")]
    assert row.split()[:3] == ["checks", "gate", "FAILED"]


def test_status_shows_each_model_s_breaker_use_pause_and_waiting_calls() -> None:
    from maestro.api.gateway.v1 import gateway_pb2
    from maestro.cli.render import format_capacity

    capacity = gateway_pb2.Capacity(scheduler="vm:1:ab")
    local = capacity.models.add(
        model="claude-sonnet-5-5",
        breaker=gateway_pb2.BREAKER_STATE_OPEN,
        overloads=3,
        requests_limit=50,
        input_tokens_limit=450000,
        output_tokens_limit=90000,
        waiting_calls=7,
    )
    local.requests_used, local.input_tokens_used, local.output_tokens_used = 41, 80311, 20410
    shared = capacity.models.add(
        model="claude-haiku-4-5", breaker=gateway_pb2.BREAKER_STATE_CLOSED, requests_limit=4000
    )
    shared.paused_until.FromSeconds(4_000_000_000)

    lines = format_capacity(capacity).splitlines()

    assert lines[0].startswith("scheduler vm:1:ab")
    assert lines[1].split() == [
        "MODEL",
        "BREAKER",
        "REQUESTS/MIN",
        "INPUT",
        "TOKENS/MIN",
        "OUTPUT",
        "TOKENS/MIN",
        "PAUSED",
        "UNTIL",
        "WAITING",
    ]
    assert lines[2].startswith("claude-sonnet-5-5  open (3 overloads)  41 of 50")
    assert "80311 of 450000" in lines[2] and lines[2].split()[-2:] == ["-", "7"]
    assert "4000 (shared)" in lines[3] and "2096-" in lines[3]  # the pause, in local time
    assert format_capacity(gateway_pb2.Capacity(scheduler="s")).endswith(
        "no model calls admitted yet"
    )

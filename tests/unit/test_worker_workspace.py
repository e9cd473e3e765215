"""The agent loop's workspace, its tools' answers, and the deliverables contract."""

from __future__ import annotations

import json

import pytest

from maestro.paths import MAX_FILE_BYTES
from maestro.personas import PERSONAS
from persona_service.contract import (
    check_deliverables,
    check_ownership,
    missing_deliverables,
    owner_of,
)
from persona_service.models import FailureKind, StepFailed, StepRequest, TextFile
from persona_service.tools import READ_LIMIT_BYTES, Workspace, tool_definitions
from persona_service.transcript import Transcript, summarize_input


def _workspace() -> Workspace:
    return Workspace(
        {"docs/a.md": "# A\n", "app/x.py": "x = 1\ny = 2\n", "tests/shared.py": "S = 1\n"},
        owned={"docs/a.md": "design", "tests/shared.py": "backend"},
        shared=["tests/shared.py"],
        unseen=["app/huge.bin"],
    )


def test_writes_appends_and_edits_are_the_step_s_changes() -> None:
    ws = _workspace()
    assert ws.write("app/new.py", "a = 1\n").text == "wrote app/new.py (6 bytes)"
    assert ws.write("./app//new.py", "b = 2\n", True).note == "write_file app/new.py (0.0 KiB)"
    assert ws.edit("app/x.py", "y = 2", "y = 3").text == "edited app/x.py"
    assert ws.edit("tests/shared.py", "S = 1", "S = 2").is_error is False  # shared
    assert ws.write("app/same.py", "").is_error is False
    assert [(f.path, f.content) for f in ws.changed()] == [
        ("app/new.py", "a = 1\nb = 2\n"),
        ("app/same.py", ""),
        ("app/x.py", "x = 1\ny = 3\n"),
        ("tests/shared.py", "S = 2\n"),
    ]


def test_owned_paths_are_refused_and_bad_input_is_an_error_not_a_crash() -> None:
    ws = _workspace()
    refused = ws.write("docs/a.md", "mine now")
    assert refused.is_error and "belongs to step 'design'" in refused.text
    assert ws.edit("docs/a.md", "# A", "# B").is_error
    assert ws.write("../etc/passwd", "x").text == "error: path '../etc/passwd' contains '..'"
    assert ws.write("big.txt", "x" * (MAX_FILE_BYTES + 1)).is_error
    assert ws.write("app/y.py", 42).text == "error: content must be a string"
    assert ws.edit("app/x.py", "", "z").is_error
    assert "occurs 0 times" in ws.edit("app/x.py", "nothing", "z").text
    assert (
        ws.edit("app/missing.py", "a", "b").text
        == "error: no file 'app/missing.py'; use write_file"
    )
    assert ws.changed() == ()


def test_reads_are_paged_and_lists_name_what_is_not_readable() -> None:
    big = "a" * (READ_LIMIT_BYTES + 10)
    ws = Workspace({"big.txt": big, "app/x.py": "x\n"}, unseen=["app/huge.bin"])
    first = ws.read("big.txt")
    assert first.text.startswith("a" * 100)
    assert first.text.endswith(f"[... 10 more bytes; read again with offset={READ_LIMIT_BYTES}]")
    assert ws.read("big.txt", READ_LIMIT_BYTES).text == "a" * 10
    assert "it exists in the run but was not sent" in ws.read("app/huge.bin").text
    listing = ws.list_files("app/")
    assert listing.text == "app/x.py (2 bytes)\nIn the run but not readable here: app/huge.bin"
    assert listing.note == "list_files app/: 1 files"


def test_tool_schemas_are_closed_and_run_checks_only_with_a_sandbox() -> None:
    names = [t["name"] for t in tool_definitions(with_checks=False)]
    assert names == ["list_files", "read_file", "write_file", "edit_file", "submit"]
    with_checks = [t["name"] for t in tool_definitions(with_checks=True)]
    assert with_checks[-2:] == ["run_checks", "submit"]
    for tool in tool_definitions(with_checks=True):
        schema: dict[str, object] = dict(tool["input_schema"])
        assert schema["additionalProperties"] is False


def test_directory_deliverables_need_a_file_under_them() -> None:
    backend = PERSONAS["backend_developer"]
    assert missing_deliverables(backend, ["app/x.py"]) == ["tests/", "pyproject.toml"]
    done = ["app/x.py", "tests/test_backend.py", "pyproject.toml"]
    assert missing_deliverables(backend, done) == []
    assert missing_deliverables(PERSONAS["devops_engineer"], ["Dockerfile"]) == [".ci/run"]
    with pytest.raises(StepFailed) as caught:
        check_deliverables(backend, [TextFile(path="app/x.py", content="")])
    assert (caught.value.kind, caught.value.reason) == (
        FailureKind.RETRYABLE,
        "missing_deliverables",
    )
    assert caught.value.message == "missing deliverables: tests/, pyproject.toml"


def test_ownership_names_every_clash_and_honours_shared_prefixes() -> None:
    assert owner_of("tests/util.py", {"tests/util.py": "qa"}, ["tests/"]) is None
    assert owner_of("tests/util.py", {"tests/util.py": "qa"}, ["tests"]) == "qa"
    request = StepRequest(
        run_id="r",
        step_id="backend",
        attempt=1,
        persona="backend_developer",
        requirement="x",
        owned_paths={"a.py": "frontend", "b.py": "qa", "c.py": "qa"},
        shared_paths=("c.py",),
    )
    files = [TextFile(path=p, content="") for p in ("a.py", "b.py", "c.py", "d.py")]
    with pytest.raises(StepFailed) as caught:
        check_ownership(request, files)
    assert caught.value.reason == "conflict" and caught.value.kind is FailureKind.FATAL
    assert caught.value.message.startswith(
        "step 'backend' wrote paths other steps own: a.py (written by step 'frontend'), "
        "b.py (written by step 'qa');"
    )


def test_the_transcript_records_sizes_not_contents_and_is_capped() -> None:
    assert summarize_input({"path": "a.py", "content": "abc"}) == {
        "path": "a.py",
        "content": {"bytes": 3, "sha256": "ba7816bf8f01cfea"},
    }
    transcript = Transcript(cap=200)
    for turn in range(10):
        transcript.add("call", turn=turn, stop_reason="tool_use")
    lines = [json.loads(line) for line in transcript.to_bytes().splitlines()]
    assert lines[0] == {"event": "call", "turn": 0, "stop_reason": "tool_use"}
    assert lines[-1]["event"] == "truncated" and lines[-1]["dropped_events"] > 0
    assert len(transcript.to_bytes()) < 300

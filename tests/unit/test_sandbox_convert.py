"""Sandbox API conversions: round trips, and requests refused with field and reason."""

from __future__ import annotations

import pytest

from maestro.api.sandbox.v1 import sandbox_pb2
from maestro.core.errors import InvalidArgument
from maestro.sandbox.convert import (
    report_from_proto,
    report_to_proto,
    request_to_proto,
)
from maestro.sandbox.models import (
    CheckName,
    CheckOutcome,
    CheckReport,
    CheckRequest,
    CheckResult,
    CompileError,
    Isolation,
    LintFinding,
    SandboxFile,
    TestFailure,
)
from sandbox_service.convert import RequestLimits, request_from_proto

LIMITS = RequestLimits(max_files=3, max_file_bytes=10, max_total_bytes=15)


def test_report_round_trips() -> None:
    report = CheckReport(
        isolation=Isolation.NAMESPACES,
        metrics={"tests_passed": 3, "lint_errors": 1, "compile_errors": 0},
        checks=(
            CheckResult(
                check=CheckName.PYTEST,
                outcome=CheckOutcome.RAN,
                reason="dependency not available in the sandbox: requests",
                exit_code=1,
                metrics={"tests_passed": 3},
                failures=(TestFailure(test="t::a", kind="error", message="boom"),),
                missing_dependencies=("requests",),
                omitted=2,
                output_tail="1 failed",
                duration_seconds=0.5,
            ),
            CheckResult(
                check=CheckName.RUFF,
                outcome=CheckOutcome.RAN,
                exit_code=0,
                metrics={"lint_errors": 1},
                findings=(LintFinding(rule="F401", path="a.py", line=1, message="unused"),),
                findings_by_rule={"F401": 1},
            ),
            CheckResult(
                check=CheckName.COMPILE,
                outcome=CheckOutcome.TIMED_OUT,
                reason="wall-time limit of 2s reached",
                compile_errors=(CompileError(path="b.py", line=0, message="x"),),
            ),
        ),
        duration_seconds=1.25,
    )
    assert report_from_proto(report_to_proto(report)) == report


def test_request_round_trips_through_the_service_checks() -> None:
    request = CheckRequest(
        files=(SandboxFile(path="app/a.py", content=b"x = 1\n"),),
        checks=(CheckName.RUFF, CheckName.PYTEST),
        coverage=True,
        label="runs/r/steps/s",
    )
    assert request_from_proto(request_to_proto(request), LIMITS) == request


def _proto(files: list[tuple[str, bytes]], checks: list[str]) -> sandbox_pb2.RunChecksRequest:
    return sandbox_pb2.RunChecksRequest(
        files=[sandbox_pb2.File(path=p, content=c) for p, c in files], checks=checks
    )


@pytest.mark.parametrize(
    ("files", "checks", "field", "reason"),
    [
        ([("../x.py", b"")], ["ruff"], "files[0].path", "contains '..'"),
        ([("/etc/x", b"")], ["ruff"], "files[0].path", "is absolute"),
        ([("a.py", b""), ("./a.py", b"")], ["ruff"], "files[1].path", "appears twice"),
        ([("a", b""), ("b", b""), ("c", b""), ("d", b"")], ["ruff"], "files", "at most 3"),
        ([("a.py", b"x" * 11)], ["ruff"], "files[0].content", "the limit is 10"),
        ([("a.py", b"x" * 8), ("b.py", b"x" * 8)], ["ruff"], "files", "15 bytes in total"),
        ([("a", b""), ("a/b.py", b"")], ["ruff"], "files", "a file and a directory"),
        ([], [], "checks", "at least one check"),
        ([], ["ruff", "mypy"], "checks[1]", "unknown check 'mypy'"),
        ([], ["ruff", "ruff"], "checks[1]", "requested twice"),
    ],
)
def test_bad_requests_name_the_field_and_reason(
    files: list[tuple[str, bytes]], checks: list[str], field: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        request_from_proto(_proto(files, checks), LIMITS)
    assert caught.value.field == field
    assert reason in caught.value.reason

"""Parsers of the tools' machine-readable output, on output the real tools write."""

from __future__ import annotations

import json

import pytest

from maestro.sandbox.models import LintFinding
from sandbox_service.parsers import (
    ReportError,
    missing_dependencies,
    parse_compileall,
    parse_coverage,
    parse_junit,
    parse_ruff,
)

# What pytest 9 writes (junit_family xunit2) for a module that passes, fails, errors in
# a fixture, skips, xfails, fails and then errors in tear-down, and a module that fails
# to import a package that is not installed.
JUNIT = b"""<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
<testsuite name="pytest" errors="3" failures="2" skipped="2" tests="8" time="0.1">
<testcase classname="" name="tests.test_http" time="0.000">
<error message="collection failure">ImportError while importing test module.
E   ModuleNotFoundError: No module named 'requests'</error></testcase>
<testcase classname="tests.test_app" name="test_ok" time="0.001" />
<testcase classname="tests.test_app" name="test_bad" time="0.001">
<failure message="AssertionError: totals differ&#10;assert 3 == 4">def test_bad():
&gt;       assert add(1, 2) == 4, "totals differ"
E       AssertionError: totals differ
E       assert 3 == 4

tests/test_app.py:7: AssertionError</failure></testcase>
<testcase classname="tests.test_app" name="test_fixture" time="0.001">
<error message="failed on setup with &quot;ValueError: no db&quot;">fixture failed
E       ValueError: no db</error></testcase>
<testcase classname="tests.test_app" name="test_skip" time="0.000">
<skipped type="pytest.skip" message="not today">tests/test_app.py:12: not today</skipped>
</testcase>
<testcase classname="tests.test_app" name="test_xfail" time="0.000">
<skipped type="pytest.xfail" message="known bug" /></testcase>
<testcase classname="tests.test_app.TestTeardown" name="test_both" time="0.001">
<failure message="assert False">E   assert False</failure>
<error message="failed on teardown with &quot;OSError: busy&quot;">E   OSError: busy</error>
</testcase>
</testsuite></testsuites>"""


def test_junit_counts_each_outcome_as_pytest_does() -> None:
    summary = parse_junit(JUNIT, max_failures=10, message_chars=300)
    assert summary.metrics() == {
        "tests_collected": 6,
        "tests_passed": 1,
        "tests_failed": 2,
        "tests_errors": 3,
        "tests_skipped": 2,
    }
    assert summary.missing_modules == {"requests"}
    assert summary.omitted == 0
    by_test = {(f.test, f.kind): f.message for f in summary.failures}
    assert by_test[("tests.test_http", "error")].startswith("collection failure")
    assert (
        "ModuleNotFoundError: No module named 'requests'" in by_test[("tests.test_http", "error")]
    )
    assert by_test[("tests.test_app::test_bad", "failed")] == (
        "AssertionError: totals differ | assert 3 == 4 | tests/test_app.py:7: AssertionError"
    )
    assert "ValueError: no db" in by_test[("tests.test_app::test_fixture", "error")]
    assert ("tests.test_app.TestTeardown::test_both", "failed") in by_test
    assert ("tests.test_app.TestTeardown::test_both", "error") in by_test


def test_junit_keeps_the_first_failures_and_counts_the_rest() -> None:
    summary = parse_junit(JUNIT, max_failures=2, message_chars=40)
    assert len(summary.failures) == 2
    assert summary.omitted == 3
    assert all(len(f.message) <= 40 for f in summary.failures)


def test_junit_of_an_empty_run() -> None:
    empty = b'<testsuites><testsuite name="pytest" tests="0"></testsuite></testsuites>'
    assert parse_junit(empty, max_failures=5, message_chars=100).metrics() == {
        "tests_collected": 0,
        "tests_passed": 0,
        "tests_failed": 0,
        "tests_errors": 0,
        "tests_skipped": 0,
    }


@pytest.mark.parametrize("data", [b"", b"<testsuites><unclosed>", b"<html></html>", b"\xff\xfe"])
def test_malformed_junit_is_a_report_error(data: bytes) -> None:
    with pytest.raises(ReportError):
        parse_junit(data, max_failures=5, message_chars=100)


def test_missing_dependencies_leave_out_stdlib_toolchain_and_workspace() -> None:
    modules = {"requests", "json", "pytest", "app", "numpy"}
    assert missing_dependencies(modules, {"app", "frontend"}) == ["numpy", "requests"]


def _ruff_item(code: str | None, filename: str, row: int, message: str) -> dict[str, object]:
    return {
        "cell": None,
        "code": code,
        "filename": filename,
        "location": {"column": 1, "row": row},
        "end_location": {"column": 2, "row": row},
        "message": message,
        "fix": None,
        "noqa_row": row,
        "url": None,
    }


def test_ruff_findings_by_rule_with_workspace_relative_paths() -> None:
    items = [
        _ruff_item("F401", "/sandbox/workspace/app/__init__.py", 1, "`os` imported but unused"),
        _ruff_item("F401", "/sandbox/workspace/app/core.py", 2, "`sys` imported but unused"),
        _ruff_item("invalid-syntax", "/sandbox/workspace/bad.py", 1, "Expected an identifier"),
        _ruff_item(None, "/sandbox/workspace/worse.py", 3, "SyntaxError: unexpected EOF"),
        _ruff_item("E711", "/sandbox/workspace/app/core.py", 9, "Comparison to `None`"),
    ]
    lint = parse_ruff(
        json.dumps(items).encode(), workspace="/sandbox/workspace", max_findings=3, message_chars=80
    )
    assert lint.total == 5
    assert lint.by_rule == {"E711": 1, "F401": 2, "syntax-error": 2}
    assert lint.omitted == 2
    assert lint.findings[0] == LintFinding(
        rule="F401", path="app/__init__.py", line=1, message="`os` imported but unused"
    )
    assert lint.findings[2].rule == "syntax-error"


def test_ruff_with_no_findings() -> None:
    lint = parse_ruff(b"[]", workspace="/w", max_findings=3, message_chars=80)
    assert (lint.total, lint.by_rule, lint.findings) == (0, {}, [])


@pytest.mark.parametrize("data", [b"not json", b'{"a": 1}', b"[1]", b'[{"code": "F401"}]', b"\xff"])
def test_malformed_ruff_output_is_a_report_error(data: bytes) -> None:
    with pytest.raises(ReportError):
        parse_ruff(data, workspace="/w", max_findings=3, message_chars=80)


# What `python -m compileall -q .` prints for two files that do not compile.
COMPILEALL = """*** Error compiling './bad.py'...
  File "./bad.py", line 1
    def (:
        ^
SyntaxError: invalid syntax

*** Error compiling './pkg/worse.py'...
  File "./pkg/worse.py", line 3
    x = (
        ^
SyntaxError: '(' was never closed

"""


def test_compileall_errors_name_file_line_and_message() -> None:
    errors, total = parse_compileall(COMPILEALL, max_errors=5, message_chars=200)
    assert total == 2
    assert [(e.path, e.line, e.message) for e in errors] == [
        ("bad.py", 1, "SyntaxError: invalid syntax"),
        ("pkg/worse.py", 3, "SyntaxError: '(' was never closed"),
    ]


def test_compileall_bounded_and_clean() -> None:
    errors, total = parse_compileall(COMPILEALL, max_errors=1, message_chars=200)
    assert (len(errors), total) == (1, 2)
    assert parse_compileall("", max_errors=5, message_chars=200) == ([], 0)


def test_coverage_total() -> None:
    report = {"meta": {}, "files": {}, "totals": {"percent_covered": 87.23456}}
    assert parse_coverage(json.dumps(report).encode()) == 87.23


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b"[]",
        b'{"totals": {"percent_covered": "high"}}',
        b'{"totals": {"percent_covered": 101}}',
    ],
)
def test_malformed_coverage_is_a_report_error(data: bytes) -> None:
    with pytest.raises(ReportError):
        parse_coverage(data)

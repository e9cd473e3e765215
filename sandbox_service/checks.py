"""The checks: how each tool is invoked, and how its run becomes a CheckResult.

Every check is a real tool run whose machine-readable output is parsed: pytest's JUnit
XML (and coverage.py's JSON), ruff's JSON, compileall's error listing. A run that was
stopped by a limit, or whose report is missing or malformed, has no metrics: the gate
that needs them fails.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass

from maestro.sandbox.models import CheckName, CheckOutcome, CheckResult
from sandbox_service.isolation import JailResult, Paths
from sandbox_service.jail_spec import SANDBOX_DIR, Limits
from sandbox_service.parsers import (
    ReportError,
    missing_dependencies,
    missing_modules,
    parse_compileall,
    parse_coverage,
    parse_junit,
    parse_ruff,
    tail,
)

JUNIT, COVERAGE, RUFF = "junit.xml", "coverage.json", "ruff.json"
# Our pytest.ini next to the workspace (used only when the project has no pytest
# configuration of its own) and coverage.py's configuration.
PYTEST_INI = "pytest.ini"
COVERAGE_RC = "coveragerc"
COVERAGE_RC_TEXT = """[run]
omit =
    */tests/*
    */test_*.py
    */*_test.py
    */conftest.py
"""
# pytest's exit codes that come with a complete report: all passed, some failed, none
# collected.
_PYTEST_COMPLETE = (0, 1, 5)
_PYTEST_EXIT = {2: "interrupted", 3: "internal error", 4: "usage error"}


@dataclass(frozen=True)
class ReportBounds:
    """How much of a check's findings the report lists."""

    max_items: int
    message_chars: int
    output_tail_chars: int


@dataclass(frozen=True)
class Invocation:
    """A tool's command line, with the files it needs and the reports it writes."""

    argv: list[str]
    files: dict[str, str]
    reports: dict[str, str]


def invocation(
    check: CheckName, *, paths: Paths, python: str, ruff: str, coverage: bool, ruff_select: str
) -> Invocation:
    """The command that runs `check` in the workspace (paths as the tool sees them)."""
    reports = paths.reports
    if check is CheckName.PYTEST:
        argv = [
            python,
            "-m",
            "pytest",
            # Output goes straight to the output limit instead of temporary files.
            "--capture=no",
            "-q",
            "--color=no",
            "-p",
            "no:cacheprovider",
            f"--rootdir={paths.workspace}",
            "--continue-on-collection-errors",
            f"--junit-xml={reports}/{JUNIT}",
        ]
        files = {f"/{SANDBOX_DIR}/{PYTEST_INI}": ""}
        wanted = {"junit": JUNIT}
        if coverage:
            argv += [
                f"--cov={paths.workspace}",
                f"--cov-config={paths.sandbox}/{COVERAGE_RC}",
                f"--cov-report=json:{reports}/{COVERAGE}",
            ]
            files[f"/{SANDBOX_DIR}/{COVERAGE_RC}"] = COVERAGE_RC_TEXT
            wanted["coverage"] = COVERAGE
        return Invocation(argv=argv, files=files, reports=wanted)
    if check is CheckName.RUFF:
        target = f"py{sys.version_info.major}{sys.version_info.minor}"
        argv = [
            ruff,
            "check",
            "--isolated",
            "--no-cache",
            "--exit-zero",
            f"--target-version={target}",
            f"--select={ruff_select}",
            "--output-format=json",
            f"--output-file={reports}/{RUFF}",
            ".",
        ]
        return Invocation(argv=argv, files={}, reports={"ruff": RUFF})
    return Invocation(argv=[python, "-m", "compileall", "-q", "."], files={}, reports={})


def _limit_problem(result: JailResult, limits: Limits) -> tuple[CheckOutcome, str] | None:
    if result.timed_out:
        why = "the sandbox did not finish in time" if result.overstayed else ""
        return CheckOutcome.TIMED_OUT, (
            why or f"wall-time limit of {limits.wall_seconds:g}s reached; every process killed"
        )
    if result.output_exceeded:
        return CheckOutcome.LIMIT_EXCEEDED, (
            f"output limit of {limits.output_bytes} bytes exceeded; every process killed"
        )
    if result.exec_error:
        return CheckOutcome.TOOL_CRASHED, result.exec_error
    if result.signal == signal.SIGXCPU or (
        result.signal == signal.SIGKILL and result.cpu_seconds >= limits.cpu_seconds
    ):
        return CheckOutcome.LIMIT_EXCEEDED, (
            f"CPU-time limit of {limits.cpu_seconds}s per process reached"
        )
    if result.signal == signal.SIGXFSZ:
        return CheckOutcome.LIMIT_EXCEEDED, f"file-size limit of {limits.file_bytes} bytes reached"
    if result.signal is not None:
        name = signal.Signals(result.signal).name if result.signal in _SIGNALS else result.signal
        return CheckOutcome.TOOL_CRASHED, f"killed by signal {name}"
    return None


_SIGNALS = {int(s) for s in signal.Signals}


def _output(result: JailResult) -> str:
    return (result.stdout + b"\n" + result.stderr).decode("utf-8", "replace")


def interpret(
    check: CheckName,
    result: JailResult,
    *,
    limits: Limits,
    bounds: ReportBounds,
    workspace: str,
    workspace_modules: set[str],
) -> CheckResult:
    """Turns one tool run into the check's result (outcome, metrics, findings)."""
    output = _output(result)
    missing = missing_dependencies(missing_modules(output), workspace_modules)
    base = CheckResult(
        check=check,
        outcome=CheckOutcome.TOOL_CRASHED,
        exit_code=result.exit_code,
        missing_dependencies=tuple(missing),
        output_tail=tail(output, bounds.output_tail_chars),
        duration_seconds=result.wall_seconds,
    )
    problem = _limit_problem(result, limits)
    if problem is not None:
        outcome, reason = problem
        return base.model_copy(update={"outcome": outcome, "reason": reason})
    try:
        if check is CheckName.PYTEST:
            return _pytest(result, bounds, workspace_modules, base)
        if check is CheckName.RUFF:
            return _ruff(result, bounds, workspace, base)
        return _compile(result, output, bounds, base)
    except ReportError as err:
        return _crashed(base, str(err))


def _crashed(base: CheckResult, reason: str) -> CheckResult:
    if base.missing_dependencies:
        reason += "; dependency not available in the sandbox: " + ", ".join(
            base.missing_dependencies
        )
    return base.model_copy(update={"outcome": CheckOutcome.TOOL_CRASHED, "reason": reason})


def _pytest(
    result: JailResult, bounds: ReportBounds, workspace_modules: set[str], base: CheckResult
) -> CheckResult:
    code = result.exit_code
    if code not in _PYTEST_COMPLETE:
        what = _PYTEST_EXIT.get(code or 0, "failed")
        return _crashed(base, f"pytest {what} (exit code {code})")
    junit = result.reports.get("junit")
    if junit is None:
        problem = result.report_problems.get("junit", "missing")
        return _crashed(base, f"pytest wrote no JUnit report ({problem})")
    summary = parse_junit(junit, max_failures=bounds.max_items, message_chars=bounds.message_chars)
    metrics = summary.metrics()
    missing = set(base.missing_dependencies)
    missing |= set(missing_dependencies(summary.missing_modules, workspace_modules))
    notes = []
    if "coverage" in result.report_problems:
        data = result.reports.get("coverage")
        if data is None:
            notes.append(f"coverage not measured: {result.report_problems['coverage']}")
        else:
            try:
                metrics["coverage_percent"] = parse_coverage(data)
            except ReportError as err:
                notes.append(f"coverage not measured: {err}")
    if missing:
        notes.append("dependency not available in the sandbox: " + ", ".join(sorted(missing)))
    return base.model_copy(
        update={
            "outcome": CheckOutcome.RAN,
            "reason": "; ".join(notes),
            "metrics": metrics,
            "failures": tuple(summary.failures),
            "missing_dependencies": tuple(sorted(missing)),
            "omitted": summary.omitted,
        }
    )


def _ruff(
    result: JailResult, bounds: ReportBounds, workspace: str, base: CheckResult
) -> CheckResult:
    if result.exit_code != 0:
        return _crashed(base, f"ruff failed (exit code {result.exit_code})")
    data = result.reports.get("ruff")
    if data is None:
        problem = result.report_problems.get("ruff", "missing")
        return _crashed(base, f"ruff wrote no report ({problem})")
    lint = parse_ruff(
        data,
        workspace=workspace,
        max_findings=bounds.max_items,
        message_chars=bounds.message_chars,
    )
    return base.model_copy(
        update={
            "outcome": CheckOutcome.RAN,
            "metrics": {"lint_errors": float(lint.total)},
            "findings": tuple(lint.findings),
            "findings_by_rule": lint.by_rule,
            "omitted": lint.omitted,
        }
    )


def _compile(
    result: JailResult, output: str, bounds: ReportBounds, base: CheckResult
) -> CheckResult:
    errors, total = parse_compileall(
        output, max_errors=bounds.max_items, message_chars=bounds.message_chars
    )
    if result.exit_code not in (0, 1) or (result.exit_code == 1) != (total > 0):
        return _crashed(
            base, f"compileall exited with {result.exit_code} and listed {total} failing files"
        )
    return base.model_copy(
        update={
            "outcome": CheckOutcome.RAN,
            "metrics": {"compile_errors": float(total)},
            "compile_errors": tuple(errors),
            "omitted": max(total - len(errors), 0),
        }
    )

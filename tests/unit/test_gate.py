"""Gate evaluation: each threshold kind, and fail-closed on anything not measured."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from maestro.sandbox.gate import Threshold, evaluate, render_failure_report, sandbox_failed
from maestro.sandbox.metrics import METRICS
from maestro.sandbox.models import (
    CheckName,
    CheckOutcome,
    CheckReport,
    CheckResult,
    CompileError,
    Isolation,
    LintFinding,
    TestFailure,
)


def _report(*results: CheckResult, isolation: Isolation = Isolation.NAMESPACES) -> CheckReport:
    metrics = {k: v for r in results for k, v in r.metrics.items()}
    return CheckReport(isolation=isolation, metrics=metrics, checks=results)


def _pytest(passed: int, failed: int, **extra: object) -> CheckResult:
    metrics = {
        "tests_collected": passed + failed,
        "tests_passed": passed,
        "tests_failed": failed,
        "tests_errors": 0,
        "tests_skipped": 0,
    }
    return CheckResult(check=CheckName.PYTEST, outcome=CheckOutcome.RAN, metrics=metrics, **extra)


def _ruff(errors: int) -> CheckResult:
    return CheckResult(
        check=CheckName.RUFF, outcome=CheckOutcome.RAN, metrics={"lint_errors": errors}
    )


DEFAULT = {
    "tests_passed": Threshold(min=1),
    "tests_failed": Threshold(max=0),
    "lint_errors": Threshold(max=0),
}


def test_a_passing_gate_shows_every_metric() -> None:
    verdict = evaluate(DEFAULT, _report(_pytest(5, 0), _ruff(0)))
    assert verdict.passed
    assert verdict.isolation is Isolation.NAMESPACES
    assert [(m.metric, m.value, m.passed) for m in verdict.metrics] == [
        ("lint_errors", 0, True),
        ("tests_failed", 0, True),
        ("tests_passed", 5, True),
    ]
    assert verdict.summary() == "passed: lint_errors=0, tests_failed=0, tests_passed=5"


def test_min_threshold_fails_below_and_passes_at_the_bound() -> None:
    below = evaluate({"tests_passed": Threshold(min=3)}, _report(_pytest(2, 0)))
    assert not below.passed
    assert below.metrics[0].reason == "tests_passed = 2, below the minimum 3"
    assert evaluate({"tests_passed": Threshold(min=3)}, _report(_pytest(3, 0))).passed


def test_max_threshold_fails_above_and_passes_at_the_bound() -> None:
    above = evaluate({"lint_errors": Threshold(max=2)}, _report(_ruff(3)))
    assert not above.passed
    assert above.metrics[0].reason == "lint_errors = 3, above the maximum 2"
    assert evaluate({"lint_errors": Threshold(max=2)}, _report(_ruff(2))).passed


def test_range_threshold_checks_both_bounds() -> None:
    window = {"tests_passed": Threshold(min=2, max=4)}
    assert [evaluate(window, _report(_pytest(n, 0))).passed for n in (1, 2, 4, 5)] == [
        False,
        True,
        True,
        False,
    ]


def test_a_missing_metric_fails() -> None:
    verdict = evaluate(DEFAULT, _report(_pytest(5, 0)))
    assert not verdict.passed
    lint = next(m for m in verdict.metrics if m.metric == "lint_errors")
    assert (lint.value, lint.passed) == (None, False)
    assert "not measured" in lint.reason


def test_a_crashed_tool_fails_even_when_the_thresholds_hold() -> None:
    crashed = CheckResult(
        check=CheckName.COMPILE,
        outcome=CheckOutcome.TOOL_CRASHED,
        reason="compileall exited with 2",
    )
    verdict = evaluate(DEFAULT, _report(_pytest(5, 0), _ruff(0), crashed))
    assert all(m.passed for m in verdict.metrics)
    assert not verdict.passed
    assert verdict.problems == ("check compile tool crashed: compileall exited with 2",)


@pytest.mark.parametrize("outcome", [CheckOutcome.TIMED_OUT, CheckOutcome.LIMIT_EXCEEDED])
def test_a_check_stopped_by_a_limit_fails(outcome: CheckOutcome) -> None:
    stopped = CheckResult(check=CheckName.PYTEST, outcome=outcome, reason="limit")
    assert not evaluate({"lint_errors": Threshold(max=0)}, _report(stopped, _ruff(0))).passed


def test_an_unknown_metric_fails() -> None:
    verdict = evaluate({"vibes": Threshold(min=0)}, _report(_pytest(1, 0)))
    assert not verdict.passed
    assert verdict.metrics[0].reason == "vibes: unknown metric"


def test_nothing_checked_is_not_a_pass() -> None:
    assert not evaluate({}, _report()).passed


def test_a_sandbox_error_fails_every_threshold() -> None:
    verdict = sandbox_failed(DEFAULT, "isolation unavailable")
    assert not verdict.passed
    assert verdict.isolation is None
    assert verdict.problems == ("sandbox error: isolation unavailable",)
    assert not any(m.passed for m in verdict.metrics)


@pytest.mark.parametrize(
    "fields",
    [{}, {"min": 2, "max": 1}, {"min": float("nan")}, {"max": float("inf")}, {"mn": 1}],
)
def test_bad_thresholds_are_rejected(fields: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Threshold.model_validate(fields)


def test_every_registered_metric_names_its_check() -> None:
    assert set(METRICS) == {
        "tests_collected",
        "tests_passed",
        "tests_failed",
        "tests_errors",
        "tests_skipped",
        "coverage_percent",
        "lint_errors",
        "compile_errors",
    }
    assert METRICS["coverage_percent"].needs_coverage
    assert METRICS["lint_errors"].check is CheckName.RUFF


def _failing_report() -> CheckReport:
    failures = tuple(
        TestFailure(test=f"tests.test_app::test_{i}", kind="failed", message="assert 1 == 2 ü")
        for i in range(40)
    )
    lint = CheckResult(
        check=CheckName.RUFF,
        outcome=CheckOutcome.RAN,
        metrics={"lint_errors": 1},
        findings=(LintFinding(rule="F401", path="app/x.py", line=1, message="unused"),),
        findings_by_rule={"F401": 1},
    )
    compiled = CheckResult(
        check=CheckName.COMPILE,
        outcome=CheckOutcome.RAN,
        metrics={"compile_errors": 1},
        compile_errors=(CompileError(path="bad.py", line=3, message="SyntaxError: x"),),
    )
    return _report(_pytest(0, 40, failures=failures), lint, compiled)


def test_failure_report_puts_the_misses_first_and_lists_the_evidence() -> None:
    report = _failing_report()
    verdict = evaluate(DEFAULT, report)
    text = render_failure_report(verdict, report, budget_bytes=100_000)
    lines = text.splitlines()
    assert lines[0] == "# Gate failed"
    assert "- lint_errors = 1, above the maximum 0" in lines
    assert "- failed tests.test_app::test_0: assert 1 == 2 ü" in lines
    assert "lint findings by rule: F401 x1" in lines
    assert "- app/x.py:1: F401 unused" in lines
    assert "- does not compile: bad.py:3: SyntaxError: x" in lines


@pytest.mark.parametrize("budget", [1, 20, 150, 600, 2000])
def test_failure_report_fits_its_byte_budget(budget: int) -> None:
    report = _failing_report()
    text = render_failure_report(evaluate(DEFAULT, report), report, budget_bytes=budget)
    assert 0 < len(text.encode("utf-8")) <= budget
    if budget >= 150:
        assert text.startswith("# Gate failed\n")
        assert "more lines left out" in text


def test_failure_report_of_a_sandbox_error() -> None:
    text = render_failure_report(sandbox_failed(DEFAULT, "down"), None, budget_bytes=500)
    assert "- sandbox error: down" in text.splitlines()

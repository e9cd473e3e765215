"""Gate evaluation: measured metrics against explicit `min`/`max` thresholds. Pure.

Fail closed: a metric that was not measured, a check that did not run to the end, an
unknown metric name and a sandbox error are failures, never passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, model_validator

from maestro.sandbox.metrics import get_metric
from maestro.sandbox.models import CheckReport, CheckResult, Isolation


class Threshold(BaseModel):
    """Bounds on one metric: `min <= value <= max`; at least one is set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min, max or both")
        for name, bound in (("min", self.min), ("max", self.max)):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"{name} must be a finite number")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self

    def describe(self) -> str:
        """`>= 1`, `<= 0` or `1..5`."""
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        return f">= {self.min:g}" if self.min is not None else f"<= {self.max:g}"


class MetricVerdict(BaseModel):
    """One metric judged against its threshold."""

    model_config = ConfigDict(frozen=True)

    metric: str
    value: float | None
    threshold: Threshold
    passed: bool
    reason: str


class GateVerdict(BaseModel):
    """The gate's verdict: passed only when every metric passed and nothing broke."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    metrics: tuple[MetricVerdict, ...]
    problems: tuple[str, ...]
    """Why the gate failed besides thresholds: checks that did not run, sandbox errors."""
    isolation: Isolation | None
    """The isolation the checks ran under; None when the sandbox failed."""

    def summary(self) -> str:
        """One line: `passed` or what failed."""
        if self.passed:
            return "passed: " + ", ".join(f"{m.metric}={_number(m.value)}" for m in self.metrics)
        missed = [m.reason for m in self.metrics if not m.passed]
        return "failed: " + "; ".join([*self.problems, *missed])


def _number(value: float | None) -> str:
    return "missing" if value is None else f"{value:g}"


def judge(metric: str, value: float | None, threshold: Threshold) -> MetricVerdict:
    """Compares one measured value with its threshold; a missing value fails."""
    if get_metric(metric) is None:
        reason = f"{metric}: unknown metric"
        return MetricVerdict(
            metric=metric, value=value, threshold=threshold, passed=False, reason=reason
        )
    if value is None or not math.isfinite(value):
        reason = f"{metric}: not measured (needs {threshold.describe()})"
        return MetricVerdict(
            metric=metric, value=None, threshold=threshold, passed=False, reason=reason
        )
    if threshold.min is not None and value < threshold.min:
        reason = f"{metric} = {value:g}, below the minimum {threshold.min:g}"
        passed = False
    elif threshold.max is not None and value > threshold.max:
        reason = f"{metric} = {value:g}, above the maximum {threshold.max:g}"
        passed = False
    else:
        reason = f"{metric} = {value:g} (needs {threshold.describe()})"
        passed = True
    return MetricVerdict(
        metric=metric, value=value, threshold=threshold, passed=passed, reason=reason
    )


def _check_problem(result: CheckResult) -> str:
    return f"check {result.check.value} {result.outcome.value.replace('_', ' ')}: {result.reason}"


def evaluate(thresholds: Mapping[str, Threshold], report: CheckReport) -> GateVerdict:
    """Judges a check report against the gate's thresholds.

    Every threshold is judged (so the verdict shows all of them); the gate passes only
    if each metric passed, every check ran to the end, and there was at least one
    threshold or check to judge.
    """
    verdicts = tuple(
        judge(name, report.metrics.get(name), threshold)
        for name, threshold in sorted(thresholds.items())
    )
    problems = [_check_problem(c) for c in report.checks if not c.ran]
    if not thresholds and not report.checks:
        problems.append("nothing was checked: no thresholds and no checks")
    passed = not problems and all(v.passed for v in verdicts)
    return GateVerdict(
        passed=passed, metrics=verdicts, problems=tuple(problems), isolation=report.isolation
    )


def sandbox_failed(thresholds: Mapping[str, Threshold], reason: str) -> GateVerdict:
    """The verdict when the sandbox could not run the checks at all: a failure."""
    verdicts = tuple(judge(name, None, threshold) for name, threshold in sorted(thresholds.items()))
    return GateVerdict(
        passed=False, metrics=verdicts, problems=(f"sandbox error: {reason}",), isolation=None
    )


def _lines_for(result: CheckResult) -> list[str]:
    lines = [f"## {result.check.value}: {result.outcome.value.replace('_', ' ')}"]
    if result.reason:
        lines.append(result.reason)
    for name in result.missing_dependencies:
        lines.append(f"- dependency not available in the sandbox: {name}")
    for failure in result.failures:
        lines.append(f"- {failure.kind} {failure.test}: {failure.message}")
    if result.findings_by_rule:
        counts = ", ".join(f"{rule} x{n}" for rule, n in sorted(result.findings_by_rule.items()))
        lines.append(f"lint findings by rule: {counts}")
    for finding in result.findings:
        lines.append(f"- {finding.path}:{finding.line}: {finding.rule} {finding.message}")
    for error in result.compile_errors:
        where = f"{error.path}:{error.line}" if error.line else error.path
        lines.append(f"- does not compile: {where}: {error.message}")
    if result.omitted:
        lines.append(f"({result.omitted} more left out by the sandbox)")
    if not result.ran and result.output_tail:
        lines += ["output (end):", result.output_tail]
    return lines


def render_failure_report(
    verdict: GateVerdict, report: CheckReport | None, *, budget_bytes: int
) -> str:
    """The gate's failure as feedback for a rework round, within `budget_bytes` (UTF-8).

    What missed comes first (the verdict), then per check the failing tests, lint
    findings and compile errors; lines that do not fit are dropped and counted.
    """
    if budget_bytes <= 0:
        return ""
    head = ["# Gate failed", *(f"- {p}" for p in verdict.problems)]
    head += [f"- {m.reason}" for m in verdict.metrics if not m.passed]
    body: list[str] = []
    if report is not None:
        for result in report.checks:
            if result.ran and not (result.failures or result.findings or result.compile_errors):
                continue
            body += ["", *_lines_for(result)]
    return _fit([*head, *body], budget_bytes)


def render_check_report(report: CheckReport, *, budget_bytes: int) -> str:
    """A check report for a model to read (the agent loop's run_checks): the metrics,
    then what each check found, within `budget_bytes`."""
    metrics = ", ".join(f"{name} {value:g}" for name, value in sorted(report.metrics.items()))
    lines = [f"isolation: {report.isolation.value}; metrics: {metrics or 'none'}"]
    for result in report.checks:
        lines += ["", *_lines_for(result)]
    return _fit(lines, budget_bytes)


def _fit(lines: list[str], budget: int) -> str:
    out: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        size = len(line.encode("utf-8")) + 1
        left = len(lines) - index
        note = f"... {left} more lines left out to fit {budget} bytes"
        reserve = len(note.encode("utf-8")) + 1 if left > 1 else 0
        if used + size + reserve > budget:
            if not out:
                return _cut(line, budget)
            if used + len(note.encode("utf-8")) + 1 <= budget:
                out.append(note)
            break
        out.append(line)
        used += size
    return "\n".join(out) + "\n" if out else ""


def _cut(text: str, budget: int) -> str:
    """The start of `text` within `budget` bytes, never splitting a character."""
    return text.encode("utf-8")[: max(budget - 1, 0)].decode("utf-8", "ignore") + "\n"

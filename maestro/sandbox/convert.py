"""Proto <-> models for the sandbox API, both directions. Pure functions.

The service reads requests and writes reports with these; the client does the reverse.
Requests are checked by the service (sandbox_service/convert.py) before they become
models; reports come from the service and are trusted as far as their shape goes.
"""

from __future__ import annotations

from typing import Literal

from maestro.api.sandbox.v1 import sandbox_pb2
from maestro.core.errors import Internal
from maestro.sandbox.models import (
    CheckName,
    CheckOutcome,
    CheckReport,
    CheckRequest,
    CheckResult,
    CompileError,
    Isolation,
    LintFinding,
    TestFailure,
)

_OUTCOME_TO_PROTO = {
    CheckOutcome.RAN: sandbox_pb2.CHECK_OUTCOME_RAN,
    CheckOutcome.TOOL_CRASHED: sandbox_pb2.CHECK_OUTCOME_TOOL_CRASHED,
    CheckOutcome.TIMED_OUT: sandbox_pb2.CHECK_OUTCOME_TIMED_OUT,
    CheckOutcome.LIMIT_EXCEEDED: sandbox_pb2.CHECK_OUTCOME_LIMIT_EXCEEDED,
}
_OUTCOME_FROM_PROTO = {v: k for k, v in _OUTCOME_TO_PROTO.items()}


def request_to_proto(request: CheckRequest) -> sandbox_pb2.RunChecksRequest:
    return sandbox_pb2.RunChecksRequest(
        files=[sandbox_pb2.File(path=f.path, content=f.content) for f in request.files],
        checks=[c.value for c in request.checks],
        options=sandbox_pb2.RunChecksOptions(coverage=request.coverage),
        label=request.label,
    )


def result_to_proto(result: CheckResult) -> sandbox_pb2.CheckResult:
    return sandbox_pb2.CheckResult(
        check=result.check.value,
        outcome=_OUTCOME_TO_PROTO[result.outcome],
        reason=result.reason,
        exit_code=result.exit_code,
        metrics=result.metrics,
        failures=[
            sandbox_pb2.TestFailure(test=f.test, kind=f.kind, message=f.message)
            for f in result.failures
        ],
        findings=[
            sandbox_pb2.LintFinding(rule=f.rule, path=f.path, line=f.line, message=f.message)
            for f in result.findings
        ],
        findings_by_rule=result.findings_by_rule,
        compile_errors=[
            sandbox_pb2.CompileError(path=e.path, line=e.line, message=e.message)
            for e in result.compile_errors
        ],
        missing_dependencies=list(result.missing_dependencies),
        omitted=result.omitted,
        output_tail=result.output_tail,
        duration_seconds=result.duration_seconds,
    )


def report_to_proto(report: CheckReport) -> sandbox_pb2.CheckReport:
    return sandbox_pb2.CheckReport(
        isolation=report.isolation.value,
        metrics=report.metrics,
        checks=[result_to_proto(c) for c in report.checks],
        duration_seconds=report.duration_seconds,
    )


def _kind(raw: str) -> Literal["failed", "error"]:
    if raw == "failed":
        return "failed"
    if raw == "error":
        return "error"
    raise Internal(f"the sandbox reported a test failure of unknown kind {raw!r}")


def result_from_proto(result: sandbox_pb2.CheckResult) -> CheckResult:
    try:
        check = CheckName(result.check)
        isolation_outcome = _OUTCOME_FROM_PROTO[result.outcome]
    except (ValueError, KeyError):
        raise Internal(
            f"the sandbox reported check {result.check!r} with outcome {result.outcome}"
        ) from None
    return CheckResult(
        check=check,
        outcome=isolation_outcome,
        reason=result.reason,
        exit_code=result.exit_code if result.HasField("exit_code") else None,
        metrics=dict(result.metrics),
        failures=tuple(
            TestFailure(test=f.test, kind=_kind(f.kind), message=f.message) for f in result.failures
        ),
        findings=tuple(
            LintFinding(rule=f.rule, path=f.path, line=f.line, message=f.message)
            for f in result.findings
        ),
        findings_by_rule=dict(result.findings_by_rule),
        compile_errors=tuple(
            CompileError(path=e.path, line=e.line, message=e.message) for e in result.compile_errors
        ),
        missing_dependencies=tuple(result.missing_dependencies),
        omitted=result.omitted,
        output_tail=result.output_tail,
        duration_seconds=result.duration_seconds,
    )


def report_from_proto(report: sandbox_pb2.CheckReport) -> CheckReport:
    try:
        isolation = Isolation(report.isolation)
    except ValueError:
        raise Internal(f"the sandbox reported unknown isolation {report.isolation!r}") from None
    return CheckReport(
        isolation=isolation,
        metrics=dict(report.metrics),
        checks=tuple(result_from_proto(c) for c in report.checks),
        duration_seconds=report.duration_seconds,
    )

"""Proto <-> domain for the worker API. Pure functions."""

from __future__ import annotations

import math
from datetime import timedelta

from maestro.api.worker.v1 import worker_pb2
from maestro.core.errors import InvalidArgument
from maestro.paths import BadPath, normalize_artifact_path
from maestro.personas import PersonaMode
from persona_service.call_admission import CallAsk
from persona_service.models import (
    Budget,
    DependencyContext,
    FailureKind,
    StepOutput,
    StepRequest,
    TextFile,
    TokenUsage,
    Verdict,
)
from persona_service.rate_limits import RateLimits
from persona_service.runner import Failure

_MODES = {
    worker_pb2.STEP_MODE_UNSPECIFIED: None,
    worker_pb2.STEP_MODE_DOCUMENT: PersonaMode.DOCUMENT,
    worker_pb2.STEP_MODE_CODE: PersonaMode.CODE,
}
_KINDS = {
    FailureKind.RETRYABLE: worker_pb2.FAILURE_KIND_RETRYABLE,
    FailureKind.OVERLOADED: worker_pb2.FAILURE_KIND_OVERLOADED,
    FailureKind.RATE_LIMITED: worker_pb2.FAILURE_KIND_RATE_LIMITED,
    FailureKind.FATAL: worker_pb2.FAILURE_KIND_FATAL,
    FailureKind.BUDGET_EXCEEDED: worker_pb2.FAILURE_KIND_BUDGET_EXCEEDED,
}
_VERDICTS = {
    None: worker_pb2.VERDICT_UNSPECIFIED,
    Verdict.APPROVE: worker_pb2.VERDICT_APPROVE,
    Verdict.CHANGES_REQUESTED: worker_pb2.VERDICT_CHANGES_REQUESTED,
}


def _text(field: str, path: str, content: bytes) -> TextFile:
    try:
        return TextFile(path=path, content=content.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidArgument(field, f"{path!r} is not UTF-8 text") from None


def _path(field: str, raw: str) -> str:
    try:
        return normalize_artifact_path(raw)
    except BadPath as err:
        raise InvalidArgument(field, str(err)) from None


def _workspace(request: worker_pb2.ExecuteStepRequest) -> tuple[tuple[TextFile, ...], list[str]]:
    """The workspace's text files; binary ones join the omitted paths (named, not shown)."""
    files: list[TextFile] = []
    binary: list[str] = []
    for f in request.workspace:
        path = _path("workspace.path", f.path)
        try:
            files.append(TextFile(path=path, content=f.content.decode("utf-8")))
        except UnicodeDecodeError:
            binary.append(path)
    return tuple(files), binary


def _budget(budget: worker_pb2.Budget) -> Budget:
    if not math.isfinite(budget.max_usd) or budget.max_usd < 0:
        raise InvalidArgument("budget.max_usd", "must be a finite number, 0 or more")
    if budget.max_tokens < 0:
        raise InvalidArgument("budget.max_tokens", "must be 0 or more")
    return Budget(max_usd=budget.max_usd, max_tokens=budget.max_tokens)


def request_from_proto(request: worker_pb2.ExecuteStepRequest) -> StepRequest:
    if not request.attempt.run_id or not request.attempt.step_id:
        raise InvalidArgument("attempt", "run_id and step_id are required")
    if request.attempt.attempt < 1:
        raise InvalidArgument("attempt.attempt", "must be 1 or more")
    if not request.persona:
        raise InvalidArgument("persona", "is required")
    if request.mode not in _MODES:
        raise InvalidArgument("mode", f"unknown step mode {request.mode}")
    workspace, binary = _workspace(request)
    return StepRequest(
        run_id=request.attempt.run_id,
        step_id=request.attempt.step_id,
        attempt=request.attempt.attempt,
        persona=request.persona,
        requirement=request.requirement,
        instructions=request.instructions,
        dependencies=tuple(
            DependencyContext(
                step_id=dep.step_id,
                persona=dep.persona,
                summary=dep.summary,
                files=tuple(_text("dependencies.files", f.path, f.content) for f in dep.files),
                omitted_paths=tuple(dep.omitted_paths),
            )
            for dep in request.dependencies
        ),
        provider=request.provider,
        model=request.model,
        effort=request.effort,
        mode=_MODES[request.mode],
        budget=_budget(request.budget),
        workspace=workspace,
        workspace_omitted=(*request.workspace_omitted, *binary),
        owned_paths={_path("owned_paths.path", o.path): o.step_id for o in request.owned_paths},
        shared_paths=tuple(request.shared_paths),
        feedback=request.feedback,
    )


def usage_to_proto(usage: TokenUsage) -> worker_pb2.TokenUsage:
    return worker_pb2.TokenUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens,
        cost_usd=usage.cost_usd,
        calls=usage.calls,
    )


def rate_limits_to_proto(report: RateLimits) -> worker_pb2.RateLimitReport:
    message = worker_pb2.RateLimitReport(model=report.model)
    for dimension in ("requests", "input_tokens", "output_tokens"):
        for part in ("limit", "remaining"):
            value = getattr(report, f"{dimension}_{part}")
            if value is not None:
                setattr(message, f"{dimension}_{part}", value)
        reset = getattr(report, f"{dimension}_reset")
        if reset is not None:
            getattr(message, f"{dimension}_reset_time").FromDatetime(reset)
    if report.retry_after is not None:
        message.retry_after.FromTimedelta(timedelta(seconds=report.retry_after))
    if report.first_answer_time is not None:
        message.first_answer_time.FromDatetime(report.first_answer_time)
    return message


def call_ask_to_proto(ask: CallAsk) -> worker_pb2.CallRequest:
    return worker_pb2.CallRequest(
        call=ask.call,
        input_tokens=ask.input_tokens,
        usage=usage_to_proto(ask.usage),
        rate_limits=rate_limits_to_proto(ask.rate_limits) if ask.rate_limits else None,
    )


def output_to_proto(output: StepOutput) -> worker_pb2.StepResult:
    return worker_pb2.StepResult(
        rate_limits=rate_limits_to_proto(output.rate_limits) if output.rate_limits else None,
        summary=output.summary,
        files=[worker_pb2.File(path=f.path, content=f.content.encode()) for f in output.files],
        usage=usage_to_proto(output.usage),
        provider=output.provider,
        model=output.model,
        transcript=output.transcript,
        verdict=_VERDICTS[output.verdict],
        findings=output.findings,
    )


def failure_to_proto(failure: Failure) -> worker_pb2.StepFailure:
    retry_after = failure.retry_after
    return worker_pb2.StepFailure(
        kind=_KINDS[failure.kind],
        message=failure.message,
        retry_after_ms=round(retry_after * 1000)
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0
        else 0,
        usage=usage_to_proto(failure.usage),
        provider=failure.provider,
        model=failure.model,
        reason=failure.reason,
        transcript=failure.transcript,
        rate_limits=rate_limits_to_proto(failure.rate_limits) if failure.rate_limits else None,
    )

"""Proto <-> domain for the worker API and the scheduler's own, on the scheduler's side.
Pure functions."""

from __future__ import annotations

import time
from datetime import UTC

from google.protobuf.timestamp_pb2 import Timestamp

from maestro.api.scheduler.v1 import scheduler_pb2
from maestro.api.worker.v1 import worker_pb2
from maestro.store import RunRecord, Usage
from scheduler.breaker import BreakerState
from scheduler.capacity import RateLimitReport
from scheduler.limiter import ModelView
from scheduler.models import AttemptRequest, AttemptResult, CallRequest
from scheduler.retry import Failure, FailureKind

_FAILURE_KINDS = {
    worker_pb2.FAILURE_KIND_RETRYABLE: FailureKind.RETRYABLE,
    worker_pb2.FAILURE_KIND_OVERLOADED: FailureKind.OVERLOADED,
    worker_pb2.FAILURE_KIND_RATE_LIMITED: FailureKind.RATE_LIMITED,
    worker_pb2.FAILURE_KIND_FATAL: FailureKind.FATAL,
    worker_pb2.FAILURE_KIND_BUDGET_EXCEEDED: FailureKind.FATAL,
}

_VERDICTS = {
    worker_pb2.VERDICT_APPROVE: "approve",
    worker_pb2.VERDICT_CHANGES_REQUESTED: "changes_requested",
}


def attempt_request_to_proto(request: AttemptRequest) -> worker_pb2.ExecuteStepRequest:
    return worker_pb2.ExecuteStepRequest(
        attempt=worker_pb2.StepAttempt(
            run_id=request.run_id, step_id=request.step_id, attempt=request.attempt
        ),
        persona=request.persona,
        requirement=request.requirement,
        instructions=request.instructions,
        dependencies=[
            worker_pb2.DependencyOutput(
                step_id=dep.step_id,
                persona=dep.persona,
                summary=dep.summary,
                files=[worker_pb2.File(path=p, content=c) for p, c in dep.files],
                omitted_paths=list(dep.omitted_paths),
            )
            for dep in request.dependencies
        ],
        provider=request.provider,
        model=request.model,
        effort=request.effort,
        budget=worker_pb2.Budget(
            max_usd=request.budget.usd or 0.0, max_tokens=request.budget.tokens or 0
        ),
        owned_paths=[
            worker_pb2.PathOwner(path=path, step_id=step_id)
            for path, step_id in request.owned_paths
        ],
        shared_paths=request.shared_paths,
        feedback=request.feedback,
        admit_calls=request.admit_calls,
    )


def call_request_from_proto(ask: worker_pb2.CallRequest) -> CallRequest:
    return CallRequest(
        call=ask.call,
        input_tokens=max(ask.input_tokens, 0),
        usage=usage_from_proto(ask.usage) if ask.HasField("usage") else None,
        calls_made=ask.usage.calls,
        rate_limits=rate_limits_from_proto(ask.rate_limits)
        if ask.HasField("rate_limits")
        else None,
    )


def usage_from_proto(usage: worker_pb2.TokenUsage) -> Usage:
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_input_tokens,
        cache_write_tokens=usage.cache_creation_input_tokens,
        cost_usd=usage.cost_usd,
    )


def _seconds(stamp: Timestamp, present: bool) -> float | None:
    return stamp.ToDatetime(tzinfo=UTC).timestamp() if present else None


def rate_limits_from_proto(report: worker_pb2.RateLimitReport) -> RateLimitReport:
    """The API's rate-limit headers as a worker passed them on."""

    def value(name: str) -> float | None:
        return getattr(report, name) if report.HasField(name) else None  # type: ignore[arg-type]

    return RateLimitReport(
        requests_limit=value("requests_limit"),
        requests_remaining=value("requests_remaining"),
        input_tokens_limit=value("input_tokens_limit"),
        input_tokens_remaining=value("input_tokens_remaining"),
        output_tokens_limit=value("output_tokens_limit"),
        output_tokens_remaining=value("output_tokens_remaining"),
        retry_after=report.retry_after.ToTimedelta().total_seconds()
        if report.HasField("retry_after")
        else None,
        model=report.model,
        first_answer=_seconds(report.first_answer_time, report.HasField("first_answer_time")),
        resets=(
            _seconds(report.requests_reset_time, report.HasField("requests_reset_time")),
            _seconds(report.input_tokens_reset_time, report.HasField("input_tokens_reset_time")),
            _seconds(report.output_tokens_reset_time, report.HasField("output_tokens_reset_time")),
        ),
    )


def step_result_from_proto(result: worker_pb2.StepResult) -> AttemptResult:
    return AttemptResult(
        rate_limits=rate_limits_from_proto(result.rate_limits)
        if result.HasField("rate_limits")
        else None,
        calls=result.usage.calls,
        summary=result.summary,
        files=tuple((f.path, f.content) for f in result.files),
        provider=result.provider,
        model=result.model,
        usage=usage_from_proto(result.usage),
        transcript=result.transcript,
        verdict=_VERDICTS.get(result.verdict, ""),
        findings=result.findings,
    )


def failure_from_proto(failure: worker_pb2.StepFailure) -> tuple[Failure, Usage]:
    """A worker's report of a failed attempt: what kind, and what it spent."""
    retry_after = failure.retry_after_ms / 1000 if failure.retry_after_ms > 0 else None
    kind = _FAILURE_KINDS.get(failure.kind, FailureKind.RETRYABLE)
    message = failure.message or f"the step failed ({failure.reason or 'no reason given'})"
    return Failure(kind, message, retry_after), usage_from_proto(failure.usage)


def failure_capacity_from_proto(
    failure: worker_pb2.StepFailure,
) -> tuple[RateLimitReport | None, int]:
    """What a failed attempt tells the capacity account: the API's headers, and how
    many calls it made."""
    report = (
        rate_limits_from_proto(failure.rate_limits) if failure.HasField("rate_limits") else None
    )
    return report, failure.usage.calls


_BREAKER_STATES = {
    BreakerState.CLOSED: scheduler_pb2.BREAKER_STATE_CLOSED,
    BreakerState.HALF_OPEN: scheduler_pb2.BREAKER_STATE_HALF_OPEN,
    BreakerState.OPEN: scheduler_pb2.BREAKER_STATE_OPEN,
}


def capacity_to_proto(scheduler: str, views: list[ModelView]) -> scheduler_pb2.Capacity:
    answer = scheduler_pb2.Capacity(scheduler=scheduler)
    for view in views:
        model = answer.models.add(
            model=view.model,
            breaker=_BREAKER_STATES[view.breaker],
            overloads=view.overloads,
            requests_limit=view.limits.requests,
            input_tokens_limit=view.limits.input_tokens,
            output_tokens_limit=view.limits.output_tokens,
            waiting_calls=view.waiting,
        )
        if view.used is not None:
            model.requests_used = view.used.requests
            model.input_tokens_used = view.used.input_tokens
            model.output_tokens_used = view.used.output_tokens
        if view.paused_until > time.time():
            model.paused_until.FromNanoseconds(round(view.paused_until * 1e9))
    return answer


def created_run_to_proto(run: RunRecord) -> scheduler_pb2.CreatedRun:
    """A run this scheduler has just recorded, for the gateway's answer to CreateRun."""
    created = scheduler_pb2.CreatedRun(
        workflow_name=run.workflow_name,
        requirement=run.requirement,
        provider=run.provider,
        created_by=run.created_by,
    )
    created.create_time.FromDatetime(run.create_time)
    add = created.steps.add
    for step in run.steps:
        add(step_id=step.step_id, persona=step.persona, kind=step.kind, depends_on=step.depends_on)
    return created

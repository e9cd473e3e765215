"""Proto <-> domain for the scheduler's two APIs. Pure functions."""

from __future__ import annotations

from maestro.api.worker.v1 import worker_pb2
from maestro.core.errors import (
    FailedPrecondition,
    Internal,
    MaestroError,
    ResourceExhausted,
    Unavailable,
)
from scheduler.models import AttemptRequest, AttemptResult

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
    )


def step_result_from_proto(result: worker_pb2.StepResult) -> AttemptResult:
    return AttemptResult(
        summary=result.summary,
        files=tuple((f.path, f.content) for f in result.files),
        provider=result.provider,
        model=result.model,
        input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens,
        cache_read_input_tokens=result.usage.cache_read_input_tokens,
        cache_creation_input_tokens=result.usage.cache_creation_input_tokens,
        cost_usd=result.usage.cost_usd,
        calls=result.usage.calls,
        transcript=result.transcript,
        verdict=_VERDICTS.get(result.verdict, ""),
        findings=result.findings,
    )


def error_from_failure(failure: worker_pb2.StepFailure) -> MaestroError:
    """The error a worker's StepFailure stands for in today's retry policy."""
    retry_after = failure.retry_after_ms / 1000 if failure.retry_after_ms > 0 else None
    message = failure.message or f"the step failed ({failure.reason or 'no reason given'})"
    if failure.kind in (worker_pb2.FAILURE_KIND_RETRYABLE, worker_pb2.FAILURE_KIND_OVERLOADED):
        return Unavailable(message, retry_after=retry_after)
    if failure.kind == worker_pb2.FAILURE_KIND_RATE_LIMITED:
        return ResourceExhausted(message, retry_after=retry_after)
    if failure.kind in (worker_pb2.FAILURE_KIND_FATAL, worker_pb2.FAILURE_KIND_BUDGET_EXCEEDED):
        return FailedPrecondition(message)
    return Internal(f"{message} (unknown failure kind {failure.kind})")

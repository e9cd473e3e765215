"""Proto <-> domain for the worker API. Pure functions."""

from __future__ import annotations

from maestro.api.worker.v1 import worker_pb2
from maestro.core.errors import FailedPrecondition, InvalidArgument, MaestroError, ResourceExhausted
from persona_service.models import (
    DependencyContext,
    ProviderUnavailable,
    StepOutput,
    StepRequest,
    TextFile,
)


def _text(path: str, content: bytes) -> TextFile:
    try:
        return TextFile(path=path, content=content.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidArgument("dependencies.files", f"{path!r} is not UTF-8 text") from None


def request_from_proto(request: worker_pb2.ExecuteStepRequest) -> StepRequest:
    if not request.attempt.run_id or not request.attempt.step_id:
        raise InvalidArgument("attempt", "run_id and step_id are required")
    if request.attempt.attempt < 1:
        raise InvalidArgument("attempt.attempt", "must be 1 or more")
    if not request.persona:
        raise InvalidArgument("persona", "is required")
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
                files=tuple(_text(f.path, f.content) for f in dep.files),
                omitted_paths=tuple(dep.omitted_paths),
            )
            for dep in request.dependencies
        ),
        provider=request.provider,
    )


def output_to_proto(output: StepOutput) -> worker_pb2.StepResult:
    return worker_pb2.StepResult(
        summary=output.summary,
        files=[worker_pb2.File(path=f.path, content=f.content.encode()) for f in output.files],
        usage=worker_pb2.TokenUsage(
            input_tokens=output.usage.input_tokens, output_tokens=output.usage.output_tokens
        ),
        provider=output.provider,
        model=output.model,
    )


def _failure_kind(err: MaestroError) -> worker_pb2.FailureKind.ValueType:
    if isinstance(err, ResourceExhausted):
        return worker_pb2.FAILURE_KIND_RATE_LIMITED
    if isinstance(err, FailedPrecondition):
        return worker_pb2.FAILURE_KIND_FATAL
    if isinstance(err, ProviderUnavailable) and "overloaded" in err.message.lower():
        return worker_pb2.FAILURE_KIND_OVERLOADED
    return worker_pb2.FAILURE_KIND_RETRYABLE


def failure_to_proto(err: MaestroError, provider: str) -> worker_pb2.StepFailure:
    """A failure of the work, as the last message of the stream (not a status code)."""
    retry_after = err.retry_after
    return worker_pb2.StepFailure(
        kind=_failure_kind(err),
        message=err.message,
        retry_after_ms=round(retry_after * 1000) if retry_after is not None else 0,
        provider=provider,
        reason=type(err).__name__,
    )

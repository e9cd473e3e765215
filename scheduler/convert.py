"""Proto <-> domain for the scheduler's two APIs. Pure functions."""

from __future__ import annotations

from maestro.api.worker.v1 import worker_pb2
from scheduler.models import AttemptRequest, AttemptResult


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
    )


def step_result_from_proto(result: worker_pb2.StepResult) -> AttemptResult:
    return AttemptResult(
        summary=result.summary,
        files=tuple((f.path, f.content) for f in result.files),
        provider=result.provider,
        model=result.model,
        input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens,
    )

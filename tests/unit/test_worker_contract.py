"""The worker contract on both sides: the worker's proto conversions, and how the
scheduler reads a StepFailure into its retry policy."""

from __future__ import annotations

from dataclasses import replace

import pytest

from maestro.api.worker.v1 import worker_pb2
from maestro.core.errors import InvalidArgument
from maestro.personas import PersonaMode
from maestro.store import Usage
from persona_service.contract import owner_of
from persona_service.convert import failure_to_proto, output_to_proto, request_from_proto
from persona_service.models import FailureKind, StepOutput, TextFile, TokenUsage, Verdict
from persona_service.runner import Failure
from scheduler.convert import attempt_request_to_proto, failure_from_proto, step_result_from_proto
from scheduler.models import AttemptBudget, AttemptRequest
from scheduler.retry import FailureKind as SchedulerFailureKind

USAGE = TokenUsage(
    input_tokens=1,
    output_tokens=2,
    cache_read_input_tokens=3,
    cache_creation_input_tokens=4,
    cost_usd=0.5,
    calls=6,
)


def _request(**fields: object) -> worker_pb2.ExecuteStepRequest:
    return worker_pb2.ExecuteStepRequest(
        attempt=worker_pb2.StepAttempt(run_id="r", step_id="s", attempt=2),
        persona="backend_developer",
        requirement="x",
        **fields,  # type: ignore[arg-type]
    )


def test_the_request_carries_model_effort_mode_budget_workspace_and_ownership() -> None:
    step = request_from_proto(
        _request(
            model="claude-next-7",
            effort="xhigh",
            mode=worker_pb2.STEP_MODE_DOCUMENT,
            budget=worker_pb2.Budget(max_usd=2.5, max_tokens=1000),
            workspace=[
                worker_pb2.File(path="./app/x.py", content=b"x = 1\n"),
                worker_pb2.File(path="logo.png", content=b"\x89PNG\xff\xfe"),
            ],
            workspace_omitted=["data/big.csv"],
            owned_paths=[worker_pb2.PathOwner(path="docs//a.md", step_id="design")],
            shared_paths=["tests/"],
            feedback="Fix the input check.",
        )
    )
    assert (step.model, step.effort, step.mode) == ("claude-next-7", "xhigh", PersonaMode.DOCUMENT)
    assert (step.budget.max_usd, step.budget.max_tokens) == (2.5, 1000)
    assert step.workspace == (TextFile(path="app/x.py", content="x = 1\n"),)
    # A binary file cannot be shown; it is named with the rest left out.
    assert step.workspace_omitted == ("data/big.csv", "logo.png")
    assert step.owned_paths == {"docs/a.md": "design"}
    assert (step.shared_paths, step.feedback) == (("tests/",), "Fix the input check.")

    default = request_from_proto(_request())
    assert (default.model, default.effort, default.mode) == ("", "", None)
    assert default.budget.unlimited


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"budget": worker_pb2.Budget(max_usd=-1)}, "budget.max_usd"),
        ({"budget": worker_pb2.Budget(max_usd=float("nan"))}, "budget.max_usd"),
        ({"budget": worker_pb2.Budget(max_tokens=-5)}, "budget.max_tokens"),
        ({"workspace": [worker_pb2.File(path="/etc/passwd")]}, "workspace.path"),
        ({"owned_paths": [worker_pb2.PathOwner(path="../x", step_id="a")]}, "owned_paths.path"),
        ({"mode": 7}, "mode"),
    ],
)
def test_malformed_requests_are_invalid_arguments(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        request_from_proto(_request(**fields))
    assert caught.value.field == field


def test_results_and_failures_carry_usage_transcript_and_verdict() -> None:
    result = output_to_proto(
        StepOutput(
            summary="ok",
            files=(TextFile(path="docs/code-review.md", content="# Review\n"),),
            usage=USAGE,
            provider="anthropic",
            model="claude-sonnet-5-5",
            transcript=b'{"event": "start"}\n',
            verdict=Verdict.CHANGES_REQUESTED,
            findings="1. [high] fix it",
        )
    )
    assert result.verdict == worker_pb2.VERDICT_CHANGES_REQUESTED
    assert (result.usage.cache_read_input_tokens, result.usage.calls) == (3, 6)
    back = step_result_from_proto(result)
    assert (back.verdict, back.findings, back.transcript) == (
        "changes_requested",
        "1. [high] fix it",
        b'{"event": "start"}\n',
    )
    assert back.usage == Usage(1, 2, 3, 4, 0.5)

    failure = failure_to_proto(
        Failure(
            kind=FailureKind.OVERLOADED,
            reason="http_529",
            message="the Anthropic API at u answered 529",
            retry_after=1.2345,
            usage=USAGE,
            provider="anthropic",
            model="claude-sonnet-5-5",
        )
    )
    assert (failure.kind, failure.retry_after_ms) == (worker_pb2.FAILURE_KIND_OVERLOADED, 1234)
    assert failure.usage.cost_usd == 0.5 and failure.reason == "http_529"


@pytest.mark.parametrize(
    ("kind", "expected", "retry_after"),
    [
        (worker_pb2.FAILURE_KIND_RETRYABLE, SchedulerFailureKind.RETRYABLE, 2.0),
        (worker_pb2.FAILURE_KIND_OVERLOADED, SchedulerFailureKind.OVERLOADED, 2.0),
        (worker_pb2.FAILURE_KIND_RATE_LIMITED, SchedulerFailureKind.RATE_LIMITED, 2.0),
        (worker_pb2.FAILURE_KIND_FATAL, SchedulerFailureKind.FATAL, 2.0),
        (worker_pb2.FAILURE_KIND_BUDGET_EXCEEDED, SchedulerFailureKind.FATAL, 2.0),
        (worker_pb2.FAILURE_KIND_UNSPECIFIED, SchedulerFailureKind.RETRYABLE, 2.0),
    ],
)
def test_the_scheduler_reads_each_failure_kind_with_its_usage(
    kind: int, expected: SchedulerFailureKind, retry_after: float | None
) -> None:
    failure, usage = failure_from_proto(
        worker_pb2.StepFailure(
            kind=kind,  # type: ignore[arg-type]
            message="the Anthropic API at u answered 529",
            retry_after_ms=2000,
            reason="http_529",
            usage=worker_pb2.TokenUsage(input_tokens=5, cost_usd=0.01),
        )
    )
    assert failure.kind is expected
    assert failure.retry_after == retry_after
    assert failure.message.startswith("the Anthropic API at u answered 529")
    # What a failed attempt spent is counted.
    assert usage == Usage(input_tokens=5, cost_usd=0.01)


def test_the_scheduler_passes_model_effort_and_budget_through() -> None:
    request = AttemptRequest(
        run_id="r",
        step_id="s",
        attempt=1,
        persona="qa_engineer",
        requirement="x",
        instructions="",
        dependencies=(),
        provider="anthropic",
        model="claude-opus-5-5",
        effort="low",
        budget=AttemptBudget(usd=1.5),
        owned_paths=(("docs/decisions.md", "architecture"),),
        shared_paths=("docs/decisions.md", "notes/"),
    )
    proto = attempt_request_to_proto(request)
    assert (proto.model, proto.effort) == ("claude-opus-5-5", "low")
    assert list(proto.shared_paths) == ["docs/decisions.md", "notes/"]
    # The worker reads it back the same: a shared path owned by another step is no clash.
    step = request_from_proto(proto)
    assert owner_of("docs/decisions.md", step.owned_paths, step.shared_paths) is None
    assert owner_of("notes/today.md", {"notes/today.md": "qa"}, step.shared_paths) is None
    assert (proto.budget.max_usd, proto.budget.max_tokens) == (1.5, 0)
    plain = attempt_request_to_proto(replace(request, model="", effort=""))
    assert (plain.model, plain.effort) == ("", "")

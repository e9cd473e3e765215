"""Failures of the work are StepFailure messages (the call ends OK), classified where they
happen and carrying the attempt's usage; failures of the request are status codes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from maestro.api.worker.v1 import worker_pb2
from tests.fakes import FakeAnthropic
from tests.integration.worker_harness import Worker, running_worker, step_request

PROMPT_MARKER = "ZEBRA-PROMPT-MARKER-7731"
STORE = "class Store:\n    pass\n"


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def worker(fake: FakeAnthropic) -> AsyncIterator[Worker]:
    async with running_worker(fake, overload_retry_after=7.0, idle_timeout=0.5) as running:
        yield running


def _doc() -> worker_pb2.ExecuteStepRequest:
    return step_request("requirements_analyst", requirement=f"A todo API. {PROMPT_MARKER}")


def _code(**fields: Any) -> worker_pb2.ExecuteStepRequest:
    return step_request("backend_developer", requirement=f"A todo API. {PROMPT_MARKER}", **fields)


def _clean(failure: worker_pb2.StepFailure, fake: FakeAnthropic) -> None:
    assert PROMPT_MARKER not in failure.message
    assert "worker" not in failure.message and "unavailable" not in failure.message
    assert failure.provider == "anthropic"
    assert failure.message.startswith(f"the Anthropic API at {fake.base_url}") or fake.base_url in (
        failure.message
    )


async def test_529_is_overloaded_with_a_backoff_hint_suited_to_overload(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_error(529, "overloaded_error", "Overloaded")
    failure = (await worker.execute(_doc())).failure

    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_OVERLOADED, "http_529")
    assert failure.retry_after_ms == 7000
    assert failure.message.startswith(f"the Anthropic API at {fake.base_url} answered 529")
    assert "overloaded_error: Overloaded (request-id req_fake_" in failure.message
    assert (failure.usage.calls, failure.usage.input_tokens) == (1, 0)
    assert failure.model == "claude-sonnet-5-5"
    _clean(failure, fake)
    assert len(fake.requests) == 1  # the SDK does not retry on its own


async def test_529_with_a_longer_retry_after_keeps_it(fake: FakeAnthropic, worker: Worker) -> None:
    fake.push_error(529, "overloaded_error", "Overloaded", retry_after=45)
    failure = (await worker.execute(_doc())).failure
    assert failure.retry_after_ms == 45000


async def test_overloaded_error_inside_a_stream_is_overloaded_and_its_usage_counts(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_tool_calls(("write_file", {"path": "app/store.py", "content": STORE}))
    fake.push_stream_error("overloaded_error", "Overloaded", after=2)
    outcome = await worker.execute(_code())

    failure = outcome.failure
    assert (failure.kind, failure.reason) == (
        worker_pb2.FAILURE_KIND_OVERLOADED,
        "overloaded_error",
    )
    assert "reported overloaded_error inside its stream" in failure.message
    assert failure.retry_after_ms == 7000
    _clean(failure, fake)
    # Both calls are counted: the first whole, the second's input from its message_start.
    first, second = (a["usage"] for a in fake.answers)
    assert failure.usage.calls == 2
    assert failure.usage.input_tokens == first["input_tokens"] + second["input_tokens"]
    assert failure.usage.cache_creation_input_tokens == (
        first["cache_creation_input_tokens"] + second["cache_creation_input_tokens"]
    )
    assert failure.usage.output_tokens >= first["output_tokens"]
    assert failure.usage.cost_usd > 0
    # The progress before it already told the scheduler what had been spent.
    last_note = [m for m in outcome.messages if m.WhichOneof("kind") == "progress"][-1]
    assert last_note.progress.usage.calls >= 1


async def test_429_is_rate_limited_with_the_api_retry_after(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_error(429, "rate_limit_error", "Number of requests exceeded", retry_after=7)
    failure = (await worker.execute(_doc())).failure

    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_RATE_LIMITED, "http_429")
    assert failure.retry_after_ms == 7000
    assert "answered 429 rate limited" in failure.message
    assert "retry after 7s" in failure.message
    _clean(failure, fake)


async def test_a_spend_limit_429_is_fatal(fake: FakeAnthropic, worker: Worker) -> None:
    fake.push_error(
        429,
        "rate_limit_error",
        "You have reached your monthly spend limit",
        error_code="enforced_spend_limit_reached",
    )
    failure = (await worker.execute(_doc())).failure

    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_FATAL, "spend_limit")
    assert "the organisation's spend limit is reached" in failure.message
    assert failure.retry_after_ms == 0


@pytest.mark.parametrize(("status", "error_type"), [(500, "api_error"), (503, "api_error")])
async def test_server_errors_are_retryable(
    fake: FakeAnthropic, worker: Worker, status: int, error_type: str
) -> None:
    fake.push_error(status, error_type, "Something broke on our side")
    failure = (await worker.execute(_doc())).failure

    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_RETRYABLE, f"http_{status}")
    assert f"answered {status} ({error_type}: Something broke on our side" in failure.message
    _clean(failure, fake)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
    ],
)
async def test_client_errors_are_fatal(
    fake: FakeAnthropic, worker: Worker, status: int, error_type: str
) -> None:
    fake.push_error(status, error_type, "That will not work")
    failure = (await worker.execute(_doc())).failure

    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_FATAL, f"http_{status}")
    assert f"refused the request: {status} {error_type}: That will not work" in failure.message
    assert failure.retry_after_ms == 0
    _clean(failure, fake)


async def test_a_silent_stream_ends_the_attempt_at_the_idle_timeout(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_stall(30)
    outcome = await worker.execute(_doc(), timeout=20)

    failure = outcome.failure
    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_RETRYABLE, "idle_timeout")
    assert failure.message == (
        f"the Anthropic API at {fake.base_url} sent nothing for 0.5s while claude-sonnet-5-5 "
        "was answering (MAESTRO_WORKER_IDLE_TIMEOUT_SECONDS)"
    )


async def test_a_stream_that_goes_silent_midway_ends_at_the_idle_timeout_with_its_usage(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_stream_stall(30, after=3)
    failure = (await worker.execute(_doc(), timeout=20)).failure

    assert failure.reason == "idle_timeout"
    assert failure.usage.calls == 1
    assert failure.usage.input_tokens == fake.answers[0]["usage"]["input_tokens"] > 0


async def test_the_attempt_ends_with_a_failure_before_the_callers_deadline(
    fake: FakeAnthropic,
) -> None:
    fake.set_default_delay(30)
    async with running_worker(fake, idle_timeout=60) as worker:
        outcome = await worker.execute(_doc(), timeout=3)

    failure = outcome.failure  # and the call itself ended OK (checked by the harness)
    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_RETRYABLE, "attempt_timeout")
    assert "the step's time ran out" in failure.message


async def test_an_unreachable_api_is_named() -> None:
    with FakeAnthropic() as gone:
        base_url = gone.base_url
    async with running_worker(gone, base_url=base_url) as worker:
        failure = (await worker.execute(_doc())).failure

    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_RETRYABLE, "connection_error")
    assert failure.message.startswith(f"cannot reach the Anthropic API at {base_url} (")
    assert failure.usage.calls == 1


async def test_a_token_budget_stops_the_loop_with_the_spend_recorded(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_tool_calls(("write_file", {"path": "app/store.py", "content": STORE}))
    fake.push_tool_calls(
        ("write_file", {"path": "tests/test_backend.py", "content": "import app\n"})
    )
    outcome = await worker.execute(_code(budget=worker_pb2.Budget(max_tokens=500)))

    failure = outcome.failure
    assert (failure.kind, failure.reason) == (
        worker_pb2.FAILURE_KIND_BUDGET_EXCEEDED,
        "budget_tokens",
    )
    spent = failure.usage
    total = (
        spent.input_tokens
        + spent.output_tokens
        + spent.cache_read_input_tokens
        + spent.cache_creation_input_tokens
    )
    assert total >= 500
    assert spent.calls == 1 and len(fake.requests) == 1  # stopped before turn 2
    assert failure.message == (
        f"the step's token budget is spent before turn 2: {total} of 500 tokens used "
        f"(${spent.cost_usd:.4f}, 1 calls)"
    )


async def test_a_dollar_budget_stops_the_loop(fake: FakeAnthropic, worker: Worker) -> None:
    fake.push_tool_calls(("write_file", {"path": "app/store.py", "content": STORE}))
    fake.push_tool_calls(("write_file", {"path": "app/more.py", "content": STORE}))
    outcome = await worker.execute(_code(budget=worker_pb2.Budget(max_usd=0.004)))

    failure = outcome.failure
    assert failure.kind == worker_pb2.FAILURE_KIND_BUDGET_EXCEEDED
    assert failure.reason == "budget_usd"
    assert failure.usage.cost_usd >= 0.004
    assert 1 <= failure.usage.calls < 4


async def test_bad_requests_are_status_codes_not_step_failures(worker: Worker) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await worker.execute(step_request("astrologer"))
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown persona 'astrologer'" in (unknown.value.details() or "")

    with pytest.raises(grpc.aio.AioRpcError) as budget:
        await worker.execute(_code(budget=worker_pb2.Budget(max_usd=-1)))
    assert budget.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (budget.value.details() or "").startswith("budget.max_usd")

    with pytest.raises(grpc.aio.AioRpcError) as path:
        await worker.execute(_code(workspace={"../x": "y"}))
    assert path.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (path.value.details() or "").startswith("workspace.path")


async def test_run_step_answers_as_execute_step_does(worker: Worker) -> None:
    request = step_request("backend_developer")
    request.provider = "offline"  # the same answer every time
    streamed = await worker.execute(request)
    unary = await worker.run_step(request)
    assert unary.result.summary == streamed.result.summary
    assert unary.files() == streamed.files()
    assert unary.files()  # the offline backend developer writes code
    assert unary.notes == streamed.notes


async def test_run_step_refuses_an_attempt_that_waits_for_grants(worker: Worker) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await worker.run_step(step_request("backend_developer", admit_calls=True))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("admit_calls")

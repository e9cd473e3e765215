"""The Anthropic provider through the real SDK against the local fake Messages API."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest

from maestro.core.errors import InvalidArgument
from maestro.paths import MAX_FILE_BYTES
from maestro.personas import PERSONAS
from persona_service.llm import AnthropicProvider, step_result_schema
from persona_service.models import (
    DependencyContext,
    ProviderBadOutput,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    StepOutput,
    StepRequest,
    TextFile,
)
from persona_service.offline import OfflineProvider
from persona_service.prompts import SUBMIT_TOOL_NAME, build_user_message
from persona_service.providers import make_provider
from tests.fakes import FakeAnthropic

MODEL = "claude-opus-4-7"
API_KEY = "sk-ant-test-key"
PERSONA = PERSONAS["backend_developer"]
# Appears only in the prompt; no error message may ever contain it.
PROMPT_MARKER = "ZEBRA-PROMPT-MARKER-7731"


def _request() -> StepRequest:
    return StepRequest(
        run_id="run-1",
        step_id="backend",
        attempt=1,
        persona="backend_developer",
        requirement=f"Build a parcel tracker. {PROMPT_MARKER}",
        dependencies=(
            DependencyContext(
                step_id="design",
                persona="solution_architect",
                summary="A REST API.",
                files=(TextFile(path="docs/architecture.md", content="# Parcels\n"),),
            ),
        ),
    )


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def provider(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    llm = AnthropicProvider(API_KEY, MODEL, base_url=fake.base_url, max_tokens=4000)
    yield llm
    await llm.aclose()


async def _run(
    provider: AnthropicProvider, seconds: float = 10.0, notes: list[str] | None = None
) -> StepOutput:
    sink = notes if notes is not None else []
    return await provider.run(_request(), PERSONA, timeout=seconds, progress=sink.append)


async def test_tool_use_answer_becomes_the_step_output(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push_tool_result(
        "Wrote the parcel API.",
        {"app/parcels.py": "PARCELS = {}\n", "./docs//api.md": "# API\n"},
        input_tokens=1234,
        output_tokens=567,
    )
    notes: list[str] = []

    output = await _run(provider, notes=notes)

    assert output.summary == "Wrote the parcel API."
    assert [(f.path, f.content) for f in output.files] == [
        ("app/parcels.py", "PARCELS = {}\n"),
        ("docs/api.md", "# API\n"),
    ]
    assert (output.usage.input_tokens, output.usage.output_tokens) == (1234, 567)
    assert (output.provider, output.model) == ("anthropic", MODEL)
    assert notes == [f"calling {MODEL}", f"{MODEL} answered: 567 output tokens"]


async def test_a_long_answer_reports_progress_while_it_streams_in(fake: FakeAnthropic) -> None:
    code = "".join(f"def handler_{i}(request):\n    return {i}\n\n" for i in range(60))
    fake.push_tool_result("Wrote the handlers.", {"app/handlers.py": code})
    fake.set_stream_pacing(0.02)  # about 40 events: the answer takes most of a second
    llm = AnthropicProvider(API_KEY, MODEL, base_url=fake.base_url, progress_every=0.1)
    notes: list[str] = []
    try:
        output = await _run(llm, notes=notes)
    finally:
        await llm.aclose()

    assert output.files[0].content == code
    writing = [n for n in notes if n.startswith(f"{MODEL} writing: ")]
    assert len(writing) >= 3, notes
    sizes = [float(n.split(": ")[1].split(" ")[0]) for n in writing]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    assert notes[0] == f"calling {MODEL}" and notes[-1].startswith(f"{MODEL} answered")


async def test_request_carries_model_prompts_tool_and_credentials(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    await _run(provider, seconds=7.0)

    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    body: dict[str, Any] = sent.body
    assert body["model"] == MODEL
    assert body["max_tokens"] == 4000
    assert body["system"] == PERSONA.system_prompt
    assert body["messages"] == [
        {"role": "user", "content": build_user_message(_request(), PERSONA)}
    ]
    [tool] = body["tools"]
    assert tool["name"] == SUBMIT_TOOL_NAME
    assert tool["input_schema"] == step_result_schema()
    assert tool["input_schema"]["required"] == ["summary", "files"]
    assert "$ref" not in json.dumps(tool["input_schema"])
    assert body["tool_choice"] == {"type": "tool", "name": SUBMIT_TOOL_NAME}
    assert body["stream"] is True  # streamed, so long answers show progress
    assert sent.api_key == API_KEY
    assert "anthropic-version" in sent.headers
    # The attempt's own timeout is in force, and the SDK does not retry on its own.
    assert float(sent.headers["x-stainless-timeout"]) == 7.0
    assert sent.headers["x-stainless-retry-count"] == "0"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, "api_error"), (503, "api_error"), (529, "overloaded_error")],
)
async def test_server_errors_are_unavailable(
    fake: FakeAnthropic, provider: AnthropicProvider, status: int, error_type: str
) -> None:
    fake.push_error(status, error_type, "Something broke on our side")

    with pytest.raises(ProviderUnavailable) as caught:
        await _run(provider)

    message = str(caught.value)
    assert f"HTTP {status}" in message
    assert error_type in message
    assert "Something broke on our side" in message
    assert "req_fake_" in message
    assert PROMPT_MARKER not in message
    # max_retries=0: the scheduler, not the SDK, decides about another attempt.
    assert len(fake.requests) == 1


async def test_rate_limit_is_reported_with_retry_after(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push_error(429, "rate_limit_error", "Number of requests exceeded", retry_after=7)

    with pytest.raises(ProviderRateLimited) as caught:
        await _run(provider)

    message = str(caught.value)
    assert "HTTP 429 rate_limit_error" in message
    assert "retry after 7s" in message
    assert PROMPT_MARKER not in message
    assert len(fake.requests) == 1


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
async def test_client_errors_are_rejected(
    fake: FakeAnthropic, provider: AnthropicProvider, status: int, error_type: str
) -> None:
    fake.push_error(status, error_type, "That will not work")

    with pytest.raises(ProviderRejected) as caught:
        await _run(provider)

    message = str(caught.value)
    assert f"HTTP {status} {error_type}: That will not work" in message
    assert PROMPT_MARKER not in message


async def test_stall_longer_than_the_timeout_is_a_timeout(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push_stall(30)

    with pytest.raises(ProviderTimeout) as caught:
        await _run(provider, seconds=0.5)

    assert "0.5s" in str(caught.value)
    assert PROMPT_MARKER not in str(caught.value)


async def test_unreachable_api_is_unavailable() -> None:
    with FakeAnthropic() as gone:
        base_url = gone.base_url
    llm = AnthropicProvider(API_KEY, MODEL, base_url=base_url)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await _run(llm)
    finally:
        await llm.aclose()
    assert "cannot reach the Anthropic API" in str(caught.value)


async def test_answer_cut_at_max_tokens_is_bad_output(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push_stop_reason_max_tokens()

    with pytest.raises(ProviderBadOutput) as caught:
        await _run(provider)

    assert "max_tokens (4000)" in str(caught.value)


async def test_answer_without_the_tool_call_is_bad_output(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push_text_reply(f"I would rather chat. {PROMPT_MARKER}")

    with pytest.raises(ProviderBadOutput) as caught:
        await _run(provider)

    message = str(caught.value)
    assert f"no {SUBMIT_TOOL_NAME} tool call" in message
    assert "stop_reason=end_turn" in message
    assert PROMPT_MARKER not in message


async def test_invalid_tool_input_is_bad_output_without_echoing_it(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.push_tool_result(f"Nothing to show. {PROMPT_MARKER}", {})

    with pytest.raises(ProviderBadOutput) as caught:
        await _run(provider)

    message = str(caught.value)
    assert "files:" in message
    assert PROMPT_MARKER not in message


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"../etc/passwd": "root:x:0:0"}, "'../etc/passwd' contains '..'"),
        ({"/etc/passwd": "root:x:0:0"}, "'/etc/passwd' is absolute"),
        ({"big.txt": "x" * (MAX_FILE_BYTES + 1)}, f"the limit is {MAX_FILE_BYTES}"),
        ({"a.txt": "1", "./a.txt": "2"}, "'a.txt' appears twice"),
    ],
)
async def test_bad_paths_and_sizes_are_bad_output(
    fake: FakeAnthropic, provider: AnthropicProvider, files: dict[str, str], reason: str
) -> None:
    fake.push_tool_result("Here you go.", files)

    with pytest.raises(ProviderBadOutput) as caught:
        await _run(provider)

    assert reason in str(caught.value)


async def test_make_provider_checks_name_and_key(fake: FakeAnthropic) -> None:
    settings: dict[str, Any] = {
        "model": MODEL,
        "base_url": fake.base_url,
        "max_tokens": 1000,
        "max_retries": 0,
    }
    with pytest.raises(ProviderNotConfigured, match="ANTHROPIC_API_KEY"):
        make_provider("anthropic", api_key=None, **settings)
    with pytest.raises(InvalidArgument) as caught:
        make_provider("gpt", api_key=API_KEY, **settings)
    assert caught.value.field == "provider"
    assert isinstance(make_provider("offline", api_key=None, **settings), OfflineProvider)

    llm = make_provider("anthropic", api_key=API_KEY, **settings)
    assert isinstance(llm, AnthropicProvider)
    try:
        output = await llm.run(_request(), PERSONA, timeout=10.0, progress=lambda _: None)
    finally:
        await llm.aclose()
    assert output.files[0].path.startswith("notes/")
    assert fake.requests[-1].body["max_tokens"] == 1000


# The fake itself: it must behave like the API for anything else that relies on it.


def _post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), json.loads(err.read())


@pytest.mark.parametrize(
    ("headers", "status", "error_type"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": "k"}, 400, "invalid_request_error"),
    ],
)
async def test_fake_refuses_requests_like_the_api(
    fake: FakeAnthropic, headers: dict[str, str], status: int, error_type: str
) -> None:
    body = json.dumps({"model": MODEL, "max_tokens": 10, "messages": []}).encode()
    got_status, got_headers, got_body = await asyncio.to_thread(
        _post, f"{fake.base_url}/v1/messages", headers, body
    )
    assert got_status == status
    assert got_body["type"] == "error"
    assert got_body["error"]["type"] == error_type
    assert got_headers["request-id"].startswith("req_fake_")


async def test_fake_streams_server_sent_events_through_the_sdk(fake: FakeAnthropic) -> None:
    fake.push_tool_result("streamed", {"a.md": "a"})
    client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    try:
        async with client.messages.stream(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"name": SUBMIT_TOOL_NAME, "input_schema": {"type": "object"}}],
            timeout=5.0,
        ) as stream:
            message = await stream.get_final_message()
    finally:
        await client.close()
    [block] = message.content
    assert block.type == "tool_use"
    assert block.input == {"summary": "streamed", "files": [{"path": "a.md", "content": "a"}]}
    assert message.stop_reason == "tool_use"
    assert fake.requests[0].body["stream"] is True


async def test_fake_default_delay_keeps_a_request_in_flight(fake: FakeAnthropic) -> None:
    fake.set_default_delay(30)
    llm = AnthropicProvider(API_KEY, MODEL, base_url=fake.base_url)
    task = asyncio.create_task(_run(llm, seconds=60.0))
    try:
        assert await fake.wait_for_requests_async(1)
        assert fake.in_flight == 1
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await llm.aclose()

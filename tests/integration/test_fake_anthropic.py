"""The fake Messages API itself, through the real SDK: it must refuse what current models
refuse, with the API's 400 body, so that the suite fails if the worker ever sends it."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes import FakeAnthropic, TextReply

MODEL = "claude-sonnet-5-5"
API_KEY = "sk-ant-test-key"
HI = [{"role": "user", "content": "hi"}]
TOOLS = [{"name": "write_file", "input_schema": {"type": "object"}}]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(min_cacheable_tokens=50) as server:
        yield server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    yield sdk
    await sdk.close()


async def _create(client: anthropic.AsyncAnthropic, **extra: Any) -> anthropic.types.Message:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": HI, **extra}
    async with client.messages.stream(**params, timeout=5.0) as stream:
        return await stream.get_final_message()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"tools": TOOLS, "tool_choice": {"type": "tool", "name": "write_file"}}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "any"}}, "tool_choice"),
        # This SDK no longer even takes sampling parameters; raw bodies still could.
        ({"extra_body": {"temperature": 0.2}}, "temperature"),
        ({"extra_body": {"temperature": 1.0}}, "temperature"),
        ({"extra_body": {"top_p": 0.9}}, "top_p"),
        ({"extra_body": {"top_k": 5}}, "top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking budgets"),
        ({"thinking": {"type": "disabled"}}, "cannot be disabled"),
        (
            {"messages": [*HI, {"role": "assistant", "content": '{"summary": "'}]},
            "prefill",
        ),
    ],
)
async def test_what_current_models_refuse_is_refused_with_a_400_body(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, extra: dict[str, Any], says: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await _create(client, **extra)
    err = caught.value
    assert err.status_code == 400
    assert err.type == "invalid_request_error"
    assert says in (err.api_message or "")
    assert (err.request_id or "").startswith("req_fake_")
    assert isinstance(err.body, dict) and err.body["type"] == "error"


async def test_what_current_models_accept_is_accepted(client: anthropic.AsyncAnthropic) -> None:
    message = await _create(
        client,
        tools=TOOLS,
        tool_choice={"type": "auto"},
        thinking={"type": "adaptive"},
        output_config={"effort": "low"},
    )
    # Auto calls the first tool of a tool set it does not know.
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["thinking", "tool_use"]


async def test_every_tool_use_needs_its_tool_result_in_the_next_message(
    client: anthropic.AsyncAnthropic,
) -> None:
    turn = {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "write_file", "input": {}},
            {"type": "tool_use", "id": "toolu_2", "name": "write_file", "input": {}},
        ],
    }
    answered = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"},
        ],
    }
    with pytest.raises(anthropic.BadRequestError) as missing:
        await _create(client, tools=TOOLS, messages=[*HI, turn, answered])
    assert "without `tool_result` blocks immediately after: toolu_2" in str(
        missing.value.api_message
    )

    stray = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_9", "content": "ok"},
        ],
    }
    with pytest.raises(anthropic.BadRequestError) as unexpected:
        await _create(client, tools=TOOLS, messages=[*HI, stray])
    assert "unexpected `tool_use_id` found in `tool_result` blocks: toolu_9" in str(
        unexpected.value.api_message
    )


async def test_thinking_blocks_must_come_back_unchanged(client: anthropic.AsyncAnthropic) -> None:
    forged = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "", "signature": "forged"},
            {"type": "text", "text": "ok"},
        ],
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        await _create(client, messages=[*HI, forged, *HI])
    assert "signature" in str(caught.value.api_message)


async def test_at_most_four_breakpoints(client: anthropic.AsyncAnthropic) -> None:
    marked = [
        {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
        for i in range(5)
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await _create(client, messages=[{"role": "user", "content": marked}])
    assert (
        caught.value.api_message
    ) == "A maximum of 4 blocks with cache_control may be provided. Found 5."


async def test_a_structured_output_schema_must_close_its_objects(
    client: anthropic.AsyncAnthropic,
) -> None:
    open_schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        await _create(
            client, output_config={"format": {"type": "json_schema", "schema": open_schema}}
        )
    assert "additionalProperties" in str(caught.value.api_message)

    closed = {**open_schema, "required": ["a"], "additionalProperties": False}
    message = await _create(
        client, output_config={"format": {"type": "json_schema", "schema": closed}}
    )
    block = message.content[0]
    assert block.type == "text"
    assert set(json.loads(block.text)) == {"a"}


async def test_a_prefix_seen_before_is_read_from_the_cache(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    document = {
        "type": "text",
        "text": "The requirement. " * 40,
        "cache_control": {"type": "ephemeral"},
    }
    first = [{"role": "user", "content": [document, {"type": "text", "text": "task one"}]}]
    second = [{"role": "user", "content": [document, {"type": "text", "text": "task two"}]}]
    one = await _create(client, messages=first)
    two = await _create(client, messages=second)

    assert one.usage.cache_creation_input_tokens and not one.usage.cache_read_input_tokens
    assert two.usage.cache_read_input_tokens == one.usage.cache_creation_input_tokens
    assert not two.usage.cache_creation_input_tokens
    # Without a breakpoint nothing is written or read.
    three = await _create(client, messages=HI)
    assert (three.usage.cache_read_input_tokens, three.usage.cache_creation_input_tokens) == (0, 0)


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
    body = json.dumps({"model": MODEL, "max_tokens": 10, "messages": HI}).encode()
    got_status, got_headers, got_body = await asyncio.to_thread(
        _post, f"{fake.base_url}/v1/messages", headers, body
    )
    assert got_status == status
    assert got_body["type"] == "error"
    assert got_body["error"]["type"] == error_type
    assert got_headers["request-id"].startswith("req_fake_")


async def test_fake_default_delay_keeps_a_request_in_flight(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.set_default_delay(30)
    task = asyncio.create_task(_create(client))
    try:
        assert await fake.wait_for_requests_async(1)
        assert fake.in_flight == 1
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_scripts_routed_by_prompt_text_serve_concurrent_steps_apart(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.push_when("backend", TextReply("for the backend"))
    fake.push_when("frontend", TextReply("for the frontend"))
    fake.push(TextReply("for anyone"))

    front = await _create(client, messages=[{"role": "user", "content": "You are frontend"}])
    other = await _create(client)
    back = await _create(client, messages=[{"role": "user", "content": "You are backend"}])

    assert [m.content[0].text for m in (front, other, back)] == [  # type: ignore[union-attr]
        "for the frontend",
        "for anyone",
        "for the backend",
    ]
    assert fake.pending == 0

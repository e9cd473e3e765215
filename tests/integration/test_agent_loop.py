"""Code personas: the agent loop through the worker's gRPC API, the real SDK and the fake
Messages API (which refuses what current models refuse, so every passing test here
also shows the worker never sent a forced tool choice, sampling parameters, a prefill
or a thinking budget)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from maestro.api.worker.v1 import worker_pb2
from tests.fakes import FakeAnthropic
from tests.integration.worker_harness import Worker, running_worker, step_request

DESIGN = {
    "docs/requirements.md": "# Requirements\n\nFR-1: add a todo.\n" * 40,
    "docs/architecture.md": "# Architecture\n\n`add(title) -> Todo`\n" * 40,
}
STORE = "class Store:\n    def add(self, title):\n        return title\n"


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(min_cacheable_tokens=200) as server:
        yield server


@pytest.fixture
async def worker(fake: FakeAnthropic) -> AsyncIterator[Worker]:
    async with running_worker(fake) as running:
        yield running


# The backend developer delivers the project's pyproject.toml too.
PYPROJECT_TEXT = '[project]\nname = "todo"\n'
PYPROJECT = ("write_file", {"path": "pyproject.toml", "content": PYPROJECT_TEXT})


def _backend(**fields: Any) -> worker_pb2.ExecuteStepRequest:
    return step_request("backend_developer", step_id="backend", workspace=DESIGN, **fields)


async def test_the_loop_writes_reads_edits_and_submits(fake: FakeAnthropic, worker: Worker) -> None:
    fake.push_tool_calls(
        ("list_files", {"prefix": "docs/"}), ("read_file", {"path": "docs/architecture.md"})
    )
    fake.push_tool_calls(
        ("write_file", {"path": "app/store.py", "content": STORE}),
        (
            "write_file",
            {"path": "tests/test_backend_store.py", "content": "def test_x():\n    pass\n"},
        ),
        PYPROJECT,
    )
    fake.push_tool_calls(
        (
            "edit_file",
            {
                "path": "app/store.py",
                "old_text": "return title",
                "new_text": "return {'title': title}",
            },
        )
    )
    fake.push_tool_calls(("submit", {"summary": "A store with a test."}))

    outcome = await worker.execute(_backend())

    result = outcome.result
    assert result.summary == "A store with a test."
    assert outcome.files() == {
        "app/store.py": STORE.replace("return title", "return {'title': title}"),
        "tests/test_backend_store.py": "def test_x():\n    pass\n",
        "pyproject.toml": PYPROJECT_TEXT,
    }
    assert (result.provider, result.model) == ("anthropic", "claude-sonnet-5-5")
    assert result.usage.calls == 4 and len(fake.requests) == 4
    assert result.usage.output_tokens > 0 and result.usage.cost_usd > 0
    # Every turn answered every tool call of the turn before (the fake checks the ids),
    # and passed the thinking blocks back unchanged (the fake checks their signatures).
    second = fake.requests[1].body["messages"]
    assert [b["type"] for b in second[1]["content"]] == ["thinking", "tool_use", "tool_use"]
    assert [b["type"] for b in second[2]["content"]] == ["tool_result", "tool_result"]
    assert (
        "FR-1" in second[2]["content"][1]["content"]
        or "add(title)" in second[2]["content"][1]["content"]
    )
    for sent in fake.requests:
        body = sent.body
        assert "tool_choice" not in body and "temperature" not in body
        assert body["thinking"] == {"type": "adaptive"}
        assert [t["name"] for t in body["tools"]] == [
            "list_files",
            "read_file",
            "write_file",
            "edit_file",
            "submit",
        ]  # no run_checks without a sandbox
    assert "write_file app/store.py (0.1 KiB)" in outcome.notes
    assert any(n.startswith("edit_file app/store.py") for n in outcome.notes)
    events = [e["event"] for e in outcome.transcript()]
    assert events[0] == "start" and events[-1] == "submit"
    assert events.count("call") == 4
    tools = [e for e in outcome.transcript() if e["event"] == "tool"]
    assert tools[2]["input"]["content"]["bytes"] == len(STORE)  # sizes, not contents
    # Each model call was a heartbeat, carrying the usage so far.
    calls = [h.usage.calls for h in outcome.heartbeats]
    assert calls == sorted(calls) and calls[-1] == 4


async def test_the_second_call_carries_a_breakpoint_on_its_turn_and_reads_the_cache(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_tool_calls(("write_file", {"path": "app/store.py", "content": STORE}))
    outcome = await worker.execute(_backend())

    assert outcome.final.WhichOneof("kind") == "failure"  # the Auto default submits too early
    first, second = fake.requests[:2]
    # System prompt, requirement, last shared document, and the latest turn.
    assert first.breakpoints() == 4 and second.breakpoints() == 4
    last_block = second.body["messages"][-1]["content"][-1]
    assert last_block["type"] == "tool_result" and "cache_control" in last_block
    # Only the latest turn carries the rolling breakpoint.
    assert all("cache_control" not in b for b in second.body["messages"][0]["content"][-2:])
    usage = [a["usage"] for a in fake.answers]
    assert usage[0]["cache_creation_input_tokens"] > 0 and usage[0]["cache_read_input_tokens"] == 0
    assert usage[1]["cache_read_input_tokens"] >= usage[0]["cache_creation_input_tokens"]
    assert outcome.failure.usage.cache_read_input_tokens == sum(
        u["cache_read_input_tokens"] for u in usage
    )


async def test_a_second_step_of_the_run_reads_the_shared_prefix_from_the_cache(
    fake: FakeAnthropic, worker: Worker
) -> None:
    await worker.execute(_backend())
    written = fake.answers[0]["usage"]["cache_creation_input_tokens"]
    frontend = step_request("frontend_developer", step_id="frontend", workspace=DESIGN)
    outcome = await worker.execute(frontend)

    assert outcome.final.WhichOneof("kind") == "result"
    first_frontend_call = fake.answers[2]["usage"]
    # Tools, system prompt, requirement and shared documents: written by the backend step.
    assert 0 < first_frontend_call["cache_read_input_tokens"] <= written


async def test_an_answer_cut_at_max_tokens_continues_instead_of_repeating(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_tool_calls(("write_file", {"path": "app/store.py", "content": STORE}))
    fake.push_stop_reason_max_tokens(
        "write_file", {"path": "app/big.py", "content": "x = 1\n" * 50}
    )
    fake.push_tool_calls(
        ("write_file", {"path": "app/big.py", "content": "x = 1\n"}),
        ("write_file", {"path": "app/big.py", "content": "y = 2\n", "append": True}),
        ("write_file", {"path": "tests/test_backend_big.py", "content": "import app\n"}),
        PYPROJECT,
    )
    fake.push_tool_calls(("submit", {"summary": "Done in parts."}))

    outcome = await worker.execute(_backend())

    assert outcome.files()["app/big.py"] == "x = 1\ny = 2\n"
    third = fake.requests[2].body["messages"]
    cut_turn, note_turn = third[3], third[4]
    # The cut call is not in the history, and the model is told what happened.
    assert [b["type"] for b in cut_turn["content"]] == ["thinking", "text"]
    assert note_turn["content"][-1]["type"] == "text"
    assert "output limit" in note_turn["content"][-1]["text"]
    assert "write_file call, which was not applied" in note_turn["content"][-1]["text"]
    assert third != fake.requests[1].body["messages"]  # not the same request again
    assert any("cut at max_tokens; continuing" in n for n in outcome.notes)


async def test_a_missing_deliverable_gets_one_repair_turn(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_tool_calls(("write_file", {"path": "app/store.py", "content": STORE}), PYPROJECT)
    fake.push_tool_calls(("submit", {"summary": "Done?"}))
    fake.push_tool_calls(
        ("write_file", {"path": "tests/test_backend.py", "content": "import app\n"})
    )
    fake.push_tool_calls(("submit", {"summary": "Now with tests."}))

    outcome = await worker.execute(_backend())

    assert outcome.result.summary == "Now with tests."
    refusal = fake.requests[2].body["messages"][-1]["content"][-1]
    assert refusal["is_error"] is True
    assert refusal["content"].startswith("Not submitted: missing deliverables: tests/")


async def test_a_deliverable_still_missing_after_the_repair_turn_fails_the_attempt(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_tool_calls(("write_file", {"path": "app/store.py", "content": STORE}))
    fake.push_tool_calls(("submit", {"summary": "Done?"}))
    fake.push_tool_calls(("submit", {"summary": "Really done."}))

    outcome = await worker.execute(_backend())

    failure = outcome.failure
    assert failure.kind == worker_pb2.FAILURE_KIND_RETRYABLE
    assert failure.reason == "missing_deliverables"
    assert failure.message.startswith("missing deliverables: tests/")
    assert failure.usage.calls == 3
    assert [e["event"] for e in outcome.transcript()][-2:] == ["call", "failure"]


async def test_writing_a_path_another_step_owns_is_refused_unless_shared(
    fake: FakeAnthropic, worker: Worker
) -> None:
    workspace = {**DESIGN, "tests/test_frontend.py": "pass\n", "tests/helpers.py": "H = 1\n"}
    fake.push_tool_calls(
        ("write_file", {"path": "tests/test_frontend.py", "content": "broken\n"}),
        ("edit_file", {"path": "tests/helpers.py", "old_text": "H = 1", "new_text": "H = 2"}),
        ("write_file", {"path": "app/store.py", "content": STORE}),
        ("write_file", {"path": "tests/test_backend.py", "content": "import app\n"}),
        PYPROJECT,
    )
    fake.push_tool_calls(("submit", {"summary": "Done."}))
    request = step_request(
        "backend_developer",
        step_id="backend",
        workspace=workspace,
        owned_paths=[
            worker_pb2.PathOwner(path="tests/test_frontend.py", step_id="frontend"),
            worker_pb2.PathOwner(path="tests/helpers.py", step_id="frontend"),
        ],
        shared_paths=["tests/helpers.py"],
    )

    outcome = await worker.execute(request)

    assert outcome.files() == {
        "app/store.py": STORE,
        "tests/helpers.py": "H = 2\n",
        "tests/test_backend.py": "import app\n",
        "pyproject.toml": PYPROJECT_TEXT,
    }
    results = fake.requests[1].body["messages"][-1]["content"]
    assert results[0]["is_error"] is True
    assert "belongs to step 'frontend'" in results[0]["content"]
    assert "is_error" not in results[1]
    assert "write_file tests/test_frontend.py refused: owned by step frontend" in outcome.notes


async def test_the_loop_is_bounded_by_turns(fake: FakeAnthropic) -> None:
    for _ in range(3):
        fake.push_tool_calls(("list_files", {}))
    async with running_worker(fake, max_turns=3) as worker:
        outcome = await worker.execute(_backend())

    assert outcome.failure.kind == worker_pb2.FAILURE_KIND_FATAL
    assert outcome.failure.reason == "max_turns"
    assert outcome.failure.usage.calls == 3
    assert "did not submit within 3 turns" in outcome.failure.message


async def test_a_model_that_stops_calling_tools_is_nudged(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_text_reply("I think I am finished.")
    outcome = await worker.execute(_backend())

    assert outcome.final.WhichOneof("kind") == "result"
    assert fake.requests[1].body["messages"][-1] == {
        "role": "user",
        "content": [
            {
                "type": "text",
                "text": "Go on with the tools; call submit once every deliverable is written.",
                "cache_control": {"type": "ephemeral"},
            }
        ],
    }


async def test_each_call_after_the_first_waits_for_the_scheduler_s_grant(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_tool_calls(("read_file", {"path": "docs/architecture.md"}))
    fake.push_tool_calls(
        ("write_file", {"path": "app/store.py", "content": STORE}),
        ("write_file", {"path": "tests/test_backend_store.py", "content": "x = 1\n"}),
        PYPROJECT,
    )
    fake.push_tool_calls(("submit", {"summary": "done"}))

    outcome = await worker.execute(_backend(admit_calls=True))

    assert outcome.result.summary == "done"
    asks = outcome.call_requests
    # The dispatch admitted the first call; the worker asked for the second and third.
    assert [ask.call for ask in asks] == [2, 3]
    assert len(fake.requests) == 3
    # Each ask says what the calls before it used, and when the latest one was answered.
    assert [ask.usage.calls for ask in asks] == [1, 2]
    assert asks[1].usage.output_tokens > asks[0].usage.output_tokens > 0
    assert all(ask.rate_limits.HasField("first_answer_time") for ask in asks)
    # What a call adds to the conversation: the answer before it and the tool results
    # (the file read in turn 1 is in the second call's estimate), not the whole prompt.
    prompt_tokens = len(str(fake.requests[0].body["messages"])) // 4
    assert 0 < asks[1].input_tokens < asks[0].input_tokens < prompt_tokens


async def test_a_refused_call_fails_the_attempt_before_it_reaches_the_api(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_tool_calls(("read_file", {"path": "docs/architecture.md"}))
    fake.push_tool_calls(("submit", {"summary": "never asked"}))

    outcome = await worker.execute(_backend(admit_calls=True), refuse_from_call=2)

    failure = outcome.failure
    assert failure.kind == worker_pb2.FAILURE_KIND_RETRYABLE
    assert failure.reason == "capacity_wait"
    assert failure.message == "no capacity in this test"
    assert len(fake.requests) == 1  # the refused call was never made
    assert failure.usage.calls == 1


async def test_without_admit_calls_the_worker_never_asks(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_tool_calls(("read_file", {"path": "docs/architecture.md"}))
    fake.push_tool_calls(
        ("write_file", {"path": "app/store.py", "content": STORE}),
        ("write_file", {"path": "tests/test_backend_store.py", "content": "x = 1\n"}),
        PYPROJECT,
    )
    fake.push_tool_calls(("submit", {"summary": "done"}))

    outcome = await worker.execute(_backend())

    assert outcome.result.summary == "done"
    assert outcome.call_requests == [] and len(fake.requests) == 3

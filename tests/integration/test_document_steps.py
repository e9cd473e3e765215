"""Document personas: one structured-output call, validated and rendered to their files,
through the worker's gRPC API, the real SDK and the fake Messages API."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from maestro.api.worker.v1 import worker_pb2
from maestro.personas import PERSONAS
from persona_service.documents import DOCUMENT_KINDS, FilesAnswer
from tests.fakes import FakeAnthropic
from tests.integration.worker_harness import Worker, running_worker, step_request

# Appears only in the prompt; no error message may ever contain it.
PROMPT_MARKER = "ZEBRA-PROMPT-MARKER-7731"

REQUIREMENTS = {
    "summary": "Two requirements for a todo API.",
    "title": "Todo API",
    "overview": "A small API to keep todos.",
    "requirements": [
        {
            "id": "FR-1",
            "kind": "functional",
            "title": "Add a todo",
            "statement": "A user can add a todo with a title.",
            "concerns": ["backend"],
            "priority": "must",
            "acceptance_criteria": ["POST /todos with a title answers 201 with its id."],
        },
        {
            "id": "NFR-1",
            "kind": "non_functional",
            "title": "Fast",
            "statement": "Requests answer quickly.",
            "concerns": ["backend"],
            "priority": "should",
            "acceptance_criteria": ["95% of requests answer within 100 ms locally."],
        },
    ],
    "assumptions": ["One user."],
    "open_questions": [],
}

REVIEW = {
    "summary": "Not ready: input is not checked.",
    "verdict": "changes_requested",
    "assessment": "Small and clear, with one serious gap.",
    "findings": [
        {
            "severity": "low",
            "path": "app/store.py",
            "line": 3,
            "title": "Naming",
            "detail": "`x` says nothing.",
            "fix": "Call it `title`.",
        },
        {
            "severity": "high",
            "path": "app/api.py",
            "line": 10,
            "title": "No input check",
            "detail": "Any body is stored.",
            "fix": "Reject a missing title with 400.",
        },
    ],
    "strengths": ["Tests cover the store."],
}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def worker(fake: FakeAnthropic) -> AsyncIterator[Worker]:
    async with running_worker(fake) as running:
        yield running


async def test_requirements_are_asked_for_as_typed_structured_output(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_json(REQUIREMENTS)
    outcome = await worker.execute(step_request("requirements_analyst", step_id="requirements"))

    result = outcome.result
    assert result.summary == "Two requirements for a todo API."
    doc = outcome.files()["docs/requirements.md"]
    assert "### FR-1: Add a todo" in doc
    assert "- FR-1.AC1: POST /todos with a title answers 201 with its id." in doc
    assert "## Non-functional requirements" in doc
    assert result.verdict == worker_pb2.VERDICT_UNSPECIFIED
    [sent] = fake.requests
    body = sent.body
    schema = body["output_config"]["format"]["schema"]
    assert body["output_config"]["format"]["type"] == "json_schema"
    assert schema == DOCUMENT_KINDS["requirements_analyst"].schema()
    assert "tools" not in body and "tool_choice" not in body
    assert body["thinking"] == {"type": "adaptive"}
    assert body["model"] == "claude-sonnet-5-5"
    assert body["stream"] is True
    assert sent.headers["x-stainless-retry-count"] == "0"
    assert result.usage.calls == 1
    assert [e["event"] for e in outcome.transcript()] == ["start", "call", "text"]


async def test_a_review_returns_its_verdict_and_rendered_findings(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_json(REVIEW)
    outcome = await worker.execute(
        step_request("code_reviewer", step_id="review", workspace={"app/api.py": "x = 1\n"})
    )

    result = outcome.result
    assert result.verdict == worker_pb2.VERDICT_CHANGES_REQUESTED
    # Most severe first: this is the feedback a rework gets.
    assert result.findings.splitlines() == [
        "1. [high] `app/api.py:10`: No input check. Any body is stored. Fix: Reject a missing "
        "title with 400.",
        "2. [low] `app/store.py:3`: Naming. `x` says nothing. Fix: Call it `title`.",
    ]
    doc = outcome.files()["docs/code-review.md"]
    assert doc.startswith("# Code reviewer\n\nVerdict: **changes requested**")
    assert result.findings in doc


async def test_the_auto_model_answers_every_document_persona_validly(
    fake: FakeAnthropic, worker: Worker
) -> None:
    for name in DOCUMENT_KINDS:
        outcome = await worker.execute(step_request(name, step_id=name.replace("_", "-")))
        result = outcome.result
        declared = {d.path for d in PERSONAS[name].deliverables}
        assert set(outcome.files()) == declared, name
        assert result.summary


async def test_a_code_persona_in_document_mode_answers_with_its_files(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_json(
        {
            "summary": "All at once.",
            "files": [
                {"path": "app/__init__.py", "content": ""},
                {"path": "tests/test_backend.py", "content": "import app\n"},
                {"path": "pyproject.toml", "content": "[project]\nname = 'x'\n"},
            ],
        }
    )
    request = step_request("backend_developer", mode=worker_pb2.STEP_MODE_DOCUMENT)
    outcome = await worker.execute(request)

    assert set(outcome.files()) == {"app/__init__.py", "tests/test_backend.py", "pyproject.toml"}
    body = fake.requests[0].body
    assert body["output_config"]["format"]["schema"]["title"] == FilesAnswer.__name__


async def test_a_document_persona_in_code_mode_runs_the_loop(
    fake: FakeAnthropic, worker: Worker
) -> None:
    request = step_request("requirements_analyst", mode=worker_pb2.STEP_MODE_CODE)
    outcome = await worker.execute(request)

    assert set(outcome.files()) == {"docs/requirements.md"}
    assert "write_file" in [t["name"] for t in fake.requests[0].body["tools"]]


async def test_an_answer_cut_at_max_tokens_is_asked_for_once_more_with_a_bigger_budget(
    fake: FakeAnthropic,
) -> None:
    fake.push_stop_reason_max_tokens()
    fake.push_json(REQUIREMENTS)
    async with running_worker(fake, max_tokens=1000) as worker:
        outcome = await worker.execute(step_request("requirements_analyst"))

    assert "docs/requirements.md" in outcome.files()
    first, second = (r.body for r in fake.requests)
    assert (first["max_tokens"], second["max_tokens"]) == (1000, 2000)
    assert second["messages"] != first["messages"]
    assert "cut off at the output limit" in second["messages"][0]["content"][-1]["text"]
    assert outcome.result.usage.calls == 2


async def test_an_answer_cut_twice_fails_the_attempt(fake: FakeAnthropic) -> None:
    fake.push_stop_reason_max_tokens()
    fake.push_stop_reason_max_tokens()
    async with running_worker(fake, max_tokens=1000) as worker:
        outcome = await worker.execute(step_request("requirements_analyst"))

    failure = outcome.failure
    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_FATAL, "max_tokens")
    assert "max_tokens (2000)" in failure.message
    assert failure.usage.calls == 2 and failure.usage.output_tokens >= 3000


def _broken(value: Any) -> dict[str, Any]:
    broken: dict[str, Any] = copy.deepcopy(value)
    broken["requirements"][0]["priority"] = f"urgent {PROMPT_MARKER}"
    del broken["title"]
    return broken


async def test_an_invalid_answer_is_bad_output_without_echoing_it(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_json(_broken(REQUIREMENTS))
    outcome = await worker.execute(step_request("requirements_analyst", requirement=PROMPT_MARKER))

    failure = outcome.failure
    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_RETRYABLE, "bad_output")
    assert "title: Field required" in failure.message
    assert "requirements.0.priority" in failure.message
    assert PROMPT_MARKER not in failure.message


async def test_a_text_answer_that_is_not_json_is_bad_output(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_text_reply(f"Here you go! {PROMPT_MARKER}")
    outcome = await worker.execute(step_request("requirements_analyst"))

    assert outcome.failure.reason == "bad_output"
    assert "not the JSON asked for" in outcome.failure.message
    assert PROMPT_MARKER not in outcome.failure.message


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"../etc/passwd": "root"}, "'../etc/passwd' contains '..'"),
        ({"/etc/passwd": "root"}, "'/etc/passwd' is absolute"),
    ],
)
async def test_bad_paths_in_a_files_answer_are_bad_output(
    fake: FakeAnthropic, worker: Worker, files: dict[str, str], reason: str
) -> None:
    fake.push_json({"summary": "x", "files": [{"path": p, "content": c} for p, c in files.items()]})
    outcome = await worker.execute(
        step_request("backend_developer", mode=worker_pb2.STEP_MODE_DOCUMENT)
    )
    assert outcome.failure.reason == "bad_output"
    assert reason in outcome.failure.message


async def test_writing_a_document_another_step_owns_is_a_conflict(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_json(REQUIREMENTS)
    request = step_request(
        "requirements_analyst",
        step_id="requirements-2",
        owned_paths=[worker_pb2.PathOwner(path="docs/requirements.md", step_id="requirements")],
    )
    outcome = await worker.execute(request)

    failure = outcome.failure
    assert (failure.kind, failure.reason) == (worker_pb2.FAILURE_KIND_FATAL, "conflict")
    assert "docs/requirements.md (written by step 'requirements')" in failure.message
    assert failure.usage.calls == 1 and failure.model == "claude-sonnet-5-5"
    assert failure.transcript  # the attempt's record travels with its failure


async def test_a_shared_path_is_no_conflict(fake: FakeAnthropic, worker: Worker) -> None:
    fake.push_json(REQUIREMENTS)
    request = step_request(
        "requirements_analyst",
        owned_paths=[worker_pb2.PathOwner(path="docs/requirements.md", step_id="requirements")],
        shared_paths=["docs/"],
    )
    outcome = await worker.execute(request)
    assert "docs/requirements.md" in outcome.files()


async def test_model_and_effort_come_from_the_request_and_unknown_models_pass_through(
    fake: FakeAnthropic, worker: Worker
) -> None:
    cases = [
        ("claude-opus-5-5", "low", {"effort": "low"}, {"type": "adaptive"}),
        ("claude-future-9", "max", {"effort": "max"}, None),  # unknown: as asked, no more
        ("claude-haiku-4-5", "low", None, None),  # known to take neither
        ("claude-sonnet-5-5", "", None, {"type": "adaptive"}),  # the model's own default
    ]
    for model, effort, config, thinking in cases:
        fake.push_json(REQUIREMENTS)
        outcome = await worker.execute(
            step_request("requirements_analyst", model=model, effort=effort)
        )
        assert outcome.result.model == model
        body = fake.requests[-1].body
        assert body["model"] == model
        sent = {k: v for k, v in body.get("output_config", {}).items() if k != "format"}
        assert (sent or None) == config, model
        assert body.get("thinking") == thinking, model
    priced = await worker.execute(step_request("requirements_analyst", model="claude-future-9"))
    assert priced.result.usage.cost_usd == 0.0  # no price known: counted as 0, never refused
    assert priced.result.usage.input_tokens > 0


async def test_the_rendered_files_are_what_the_answer_said(
    fake: FakeAnthropic, worker: Worker
) -> None:
    fake.push_json(REQUIREMENTS)
    outcome = await worker.execute(step_request("requirements_analyst"))
    answer = json.loads(fake.answers[0]["content"][-1]["text"])
    assert answer == REQUIREMENTS
    assert all(r["id"] in outcome.files()["docs/requirements.md"] for r in answer["requirements"])

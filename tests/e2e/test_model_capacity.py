"""Model capacity end to end: the scheduler holds the installation to the
organisation's rate limit, a 429's retry-after slows everyone, sustained overload opens
the model's breaker, and declared fallbacks take over (real processes; only the
Anthropic API is the fake, which enforces its own limit and counts every window)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.stack import LocalStack
from tests.e2e.channels import gateway_channel
from tests.e2e.conftest import FAST_RETRIES
from tests.e2e.events import collect_events, event_type_name, wait_for_event
from tests.fakes.anthropic_server import FakeAnthropic
from tests.support.databases import Templates, migrated_database

MODEL = "claude-sonnet-5-5"
# A minute of the rate limits, scaled down so that a test sees several.
MINUTE = 5.0
RPM = 60

# Five document steps: one model call each, so requests are exactly calls.
DOCS = """
name: five-documents
model: claude-sonnet-5-5
steps:
  - {id: requirements, persona: requirements_analyst}
  - {id: architecture, persona: solution_architect, depends_on: [requirements]}
  - {id: security, persona: security_reviewer, depends_on: [architecture]}
  - {id: review, persona: code_reviewer, depends_on: [architecture]}
  - {id: docs, persona: technical_writer, depends_on: [security, review]}
"""

# One code step: an agent loop of two calls (the fake writes the deliverables, then
# submits), each admitted on its own.
ONE_LOOP = """
name: one-loop
model: claude-sonnet-5-5
steps:
  - {id: packaging, persona: devops_engineer}
"""
LOOP_RPM = 20

ONE_DOC = """
name: one-document
model: claude-sonnet-5-5
retry: {max_attempts: 6, initial_backoff: 100ms, max_backoff: 200ms}
steps:
  - {id: requirements, persona: requirements_analyst}
"""

ONE_DOC_WITH_FALLBACK = """
name: one-document-with-fallback
model: claude-sonnet-5-5
fallback: [{provider: offline}]
steps:
  - {id: requirements, persona: requirements_analyst}
"""

ONE_DOC_FALLBACK_MODEL = """
name: one-document-fallback-model
model: claude-sonnet-5-5
retry: {max_attempts: 1}
steps:
  - id: requirements
    persona: requirements_analyst
    fallback: [{model: claude-haiku-4-5}]
"""


def _env(fake: FakeAnthropic, **extra: str) -> dict[str, str]:
    return {
        "ANTHROPIC_API_KEY": "test-key",
        "MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake.base_url,
        "MAESTRO_WORKER_HEARTBEAT_INTERVAL_SECONDS": "0.2",
        "MAESTRO_WORKER_OVERLOAD_RETRY_AFTER_SECONDS": "0",
        **FAST_RETRIES,
        "MAESTRO_SCHEDULER_MAX_STEPS_IN_FLIGHT": "100",
        "MAESTRO_SCHEDULER_CAPACITY_MINUTE_SECONDS": str(MINUTE),
        "MAESTRO_SCHEDULER_MODEL_LIMITS": json.dumps({MODEL: {"rpm": RPM}}),
        **extra,
    }


@pytest.fixture
async def stack_env() -> dict[str, str]:
    return {}


@pytest.fixture
async def capacity_stack(
    tmp_path: Path, fake_anthropic: FakeAnthropic, database_url: str, stack_env: dict[str, str]
) -> AsyncIterator[gateway_pb2_grpc.MaestroServiceAsyncStub]:
    env = _env(fake_anthropic, **stack_env)
    async with LocalStack(
        tmp_path / "stack", provider="anthropic", extra_env=env, database_url=database_url
    ) as stack:
        channel = gateway_channel(stack)
        yield gateway_pb2_grpc.MaestroServiceStub(channel)
        await channel.close(None)


async def _create(stub: gateway_pb2_grpc.MaestroServiceAsyncStub, yaml: str) -> str:
    run = await stub.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_yaml=yaml,
            requirement="A URL shortener with expiry",
            request_id=uuid.uuid4().hex,
        ),
        timeout=10,
    )
    return run.name


async def _breaker(stub: gateway_pb2_grpc.MaestroServiceAsyncStub) -> tuple[int, int]:
    """The model's breaker state and overload count, as GetCapacity reports them."""
    capacity = await stub.GetCapacity(gateway_pb2.GetCapacityRequest(), timeout=10)
    (model,) = [m for m in capacity.models if m.model == MODEL]
    return model.breaker, model.overloads


def _of(events: list[gateway_pb2.RunEvent], name: str) -> list[gateway_pb2.RunEvent]:
    return [e for e in events if event_type_name(e) == name]


async def test_twenty_runs_stay_within_the_rate_limit_and_provoke_no_429(
    capacity_stack: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_rate_limit(RPM, window=MINUTE)
    runs = await asyncio.gather(*(_create(capacity_stack, DOCS) for _ in range(20)))
    histories = await asyncio.gather(
        *(collect_events(capacity_stack, run, timeout=120) for run in runs)
    )

    assert all(h[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED for h in histories)
    assert len(fake_anthropic.arrival_times()) == 20 * 5

    assert fake_anthropic.rate_limited == 0
    assert fake_anthropic.max_in_window(MINUTE) <= RPM
    # 100 calls against 60 a minute: some waited, visibly, naming the limit.
    queued = [e for h in histories for e in _of(h, "STEP_QUEUED")]
    assert queued
    assert all(e.attributes["reason"].startswith("waiting for capacity: ") for e in queued), queued[
        0
    ]
    assert any(f"{MODEL} requests per minute ({RPM})" in e.attributes["reason"] for e in queued)


@pytest.mark.parametrize(
    "stack_env", [{"MAESTRO_SCHEDULER_MODEL_LIMITS": json.dumps({MODEL: {"rpm": LOOP_RPM}})}]
)
async def test_every_call_of_an_agent_loop_is_admitted_not_only_its_first(
    capacity_stack: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_rate_limit(LOOP_RPM, window=MINUTE)
    runs = await asyncio.gather(*(_create(capacity_stack, ONE_LOOP) for _ in range(20)))
    histories = await asyncio.gather(
        *(collect_events(capacity_stack, run, timeout=120) for run in runs)
    )

    assert all(h[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED for h in histories)
    # 40 calls against 20 a minute: admitting only each step's first call would let
    # the 20 second calls go out in the first minute too, and the fake answer 429.
    assert len(fake_anthropic.arrival_times()) == 20 * 2
    assert fake_anthropic.rate_limited == 0
    assert fake_anthropic.max_in_window(MINUTE) <= LOOP_RPM
    # A second call that waited said so, while its step was running.
    notes = [e.message for h in histories for e in _of(h, "STEP_PROGRESS")]
    waited = [n for n in notes if n.startswith("call 2 is waiting for capacity: ")]
    assert waited, notes[:10]


KEY_RPM = 4


@pytest.mark.parametrize(
    "stack_env",
    [
        {
            # The workers call with the key labelled team-b, whose own limit is tighter
            # than the model's.
            "MAESTRO_SCHEDULER_API_KEYS": "*=team-b",
            "MAESTRO_SCHEDULER_MODEL_LIMITS": json.dumps(
                {MODEL: {"rpm": RPM}, f"team-b/{MODEL}": {"rpm": KEY_RPM}}
            ),
        }
    ],
)
async def test_a_pool_s_api_key_is_held_to_that_key_s_own_limit(
    capacity_stack: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_rate_limit(KEY_RPM, window=MINUTE)
    runs = await asyncio.gather(*(_create(capacity_stack, ONE_DOC) for _ in range(8)))
    histories = await asyncio.gather(
        *(collect_events(capacity_stack, run, timeout=120) for run in runs)
    )

    assert all(h[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED for h in histories)
    assert fake_anthropic.rate_limited == 0
    assert fake_anthropic.max_in_window(MINUTE) <= KEY_RPM
    queued = [e for h in histories for e in _of(h, "STEP_QUEUED")]
    assert any(
        f"team-b/{MODEL} requests per minute ({KEY_RPM})" in e.attributes["reason"] for e in queued
    )
    capacity = await capacity_stack.GetCapacity(gateway_pb2.GetCapacityRequest(), timeout=10)
    assert [m.model for m in capacity.models] == [f"team-b/{MODEL}"]


async def test_a_429_with_retry_after_pauses_the_model_for_every_run(
    capacity_stack: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push_error(429, "rate_limit_error", "slow down", retry_after=3)
    first = await _create(capacity_stack, ONE_DOC)
    paused = await wait_for_event(capacity_stack, first, gateway_pb2.EVENT_TYPE_MODEL_PAUSED)
    assert paused[-1].attributes["model"] == MODEL
    assert paused[-1].attributes["retry_after_seconds"] == "3"
    # Another run, started during the pause, waits for it too: not one step alone.
    second = await _create(capacity_stack, ONE_DOC)
    events = await collect_events(capacity_stack, second)

    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    (queued,) = _of(events, "STEP_QUEUED")
    assert "the API asked us to wait (429)" in queued.attributes["reason"]
    assert (await collect_events(capacity_stack, first))[-1].type == (
        gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    )
    arrivals = fake_anthropic.arrival_times()
    assert len(arrivals) == 3 and fake_anthropic.rate_limited == 0
    # Nothing reached the API before its retry-after had passed.
    assert min(arrivals[1:]) - arrivals[0] >= 3.0


@pytest.mark.parametrize(
    "stack_env",
    [
        {
            "MAESTRO_SCHEDULER_BREAKER_THRESHOLD": "2",
            "MAESTRO_SCHEDULER_BREAKER_COOL_DOWN_SECONDS": "3",
        }
    ],
)
async def test_overload_opens_the_breaker_fallbacks_take_over_and_recovery_closes_it(
    capacity_stack: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_overloaded(True)
    waiting = await _create(capacity_stack, ONE_DOC)
    opened = await wait_for_event(capacity_stack, waiting, gateway_pb2.EVENT_TYPE_BREAKER_OPENED)
    assert opened[-1].attributes["model"] == MODEL
    assert fake_anthropic.overload_answers == 2
    # `maestro status` (the gateway's GetCapacity) shows the breaker open.
    assert await _breaker(capacity_stack) == (gateway_pb2.BREAKER_STATE_OPEN, 2)

    # While it is open, a step with a declared fallback goes straight to it, labelled.
    with_fallback = await _create(capacity_stack, ONE_DOC_WITH_FALLBACK)
    events = await collect_events(capacity_stack, with_fallback)
    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    (fallback,) = _of(events, "STEP_FALLBACK")
    assert fallback.attributes["provider"] == "offline"
    assert f"{MODEL} circuit breaker open" in fallback.attributes["reason"]
    (done,) = _of(events, "STEP_SUCCEEDED")
    assert done.attributes["provider"] == "offline"
    got = await capacity_stack.GetRun(gateway_pb2.GetRunRequest(name=with_fallback), timeout=10)
    assert got.steps[0].provider == "offline"
    assert got.steps[0].summary.startswith("[fallback 1: provider offline, because ")
    assert fake_anthropic.overload_answers == 2  # the fallback step never called the model

    # The step without one waits within its deadline; the API recovers; a probe closes it.
    fake_anthropic.set_overloaded(False)
    events = await collect_events(capacity_stack, waiting)
    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    assert any("circuit breaker open" in e.attributes["reason"] for e in _of(events, "STEP_QUEUED"))
    (closed,) = _of(events, "BREAKER_CLOSED")
    assert closed.attributes["model"] == MODEL
    assert (await _breaker(capacity_stack))[0] == gateway_pb2.BREAKER_STATE_CLOSED
    (done,) = _of(events, "STEP_SUCCEEDED")
    assert done.attributes["provider"] == "anthropic"
    assert fake_anthropic.overload_answers == 2  # it waited, and called only to probe


async def test_a_step_whose_attempts_are_spent_uses_its_fallback_model(
    capacity_stack: gateway_pb2_grpc.MaestroServiceAsyncStub, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push_error(500, "api_error", "Internal server error")
    run = await _create(capacity_stack, ONE_DOC_FALLBACK_MODEL)
    events = await collect_events(capacity_stack, run)

    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    (retry,) = _of(events, "STEP_RETRY_SCHEDULED")
    assert retry.attributes["reason"].endswith("; next: fallback 1")
    (fallback,) = _of(events, "STEP_FALLBACK")
    assert fallback.attributes["model"] == "claude-haiku-4-5"
    assert "answered 500" in fallback.attributes["reason"]
    (done,) = _of(events, "STEP_SUCCEEDED")
    assert done.attributes["model"] == "claude-haiku-4-5"
    models = [r.body["model"] for r in fake_anthropic.requests]
    assert models == [MODEL, "claude-haiku-4-5"]
    got = await capacity_stack.GetRun(gateway_pb2.GetRunRequest(name=run), timeout=10)
    assert got.steps[0].summary.startswith("[fallback 1: model claude-haiku-4-5, because ")


async def test_two_schedulers_on_postgresql_share_one_limit(
    tmp_path: Path, fake_anthropic: FakeAnthropic, database_templates: Templates
) -> None:
    fake_anthropic.set_rate_limit(RPM, window=MINUTE)
    env = _env(fake_anthropic, MAESTRO_SCHEDULER_CAPACITY_SKEW_SECONDS="2")
    for url in migrated_database(database_templates, "postgres", tmp_path):
        async with LocalStack(
            tmp_path / "stack", provider="anthropic", extra_env=env, database_url=url, schedulers=2
        ) as stack:
            channel = gateway_channel(stack)
            stub = gateway_pb2_grpc.MaestroServiceStub(channel)
            # One after another: the gateway spreads them over both schedulers.
            runs = [await _create(stub, DOCS) for _ in range(20)]
            histories = await asyncio.gather(
                *(collect_events(stub, run, timeout=120) for run in runs)
            )
            await channel.close(None)

    assert all(h[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED for h in histories)
    schedulers = {e.attributes["scheduler"] for h in histories for e in _of(h, "STEP_STARTED")}
    assert len(schedulers) == 2  # both drove runs, each with its own view of the limit
    assert len(fake_anthropic.arrival_times()) == 20 * 5
    assert fake_anthropic.rate_limited == 0
    assert fake_anthropic.max_in_window(MINUTE) <= RPM
    assert any(_of(h, "STEP_QUEUED") for h in histories)

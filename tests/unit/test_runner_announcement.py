"""When an attempt's stream says who is working on it: only when it is worth saying."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from persona_service.bench_provider import BenchProvider
from persona_service.models import StepOutput, StepRequest, TokenUsage
from persona_service.runner import Heartbeat, Note, StepRunner

ANNOUNCEMENT = "backend developer working with the bench provider"


def _request(instructions: str) -> StepRequest:
    return StepRequest(
        run_id="r1",
        step_id="s1",
        attempt=1,
        persona="backend_developer",
        requirement="benchmark",
        instructions=instructions,
        provider="bench",
    )


async def _stream(runner: StepRunner, instructions: str) -> list[Any]:
    return [item async for item in runner.run(_request(instructions), time_remaining=30.0)]


def _runner(
    *, announce_after: float, heartbeat_interval: float = 5.0, provider: Any = None
) -> StepRunner:
    return StepRunner(
        {"bench": provider or BenchProvider()},
        default_provider="bench",
        heartbeat_interval=heartbeat_interval,
        announce_after=announce_after,
    )


async def test_an_attempt_that_ends_at_once_sends_only_its_output() -> None:
    items = await _stream(_runner(announce_after=1.0), "")
    assert len(items) == 1
    (output,) = items
    assert isinstance(output, StepOutput)
    assert output.provider == "bench"  # the output names the provider the note would have


async def test_an_attempt_still_working_says_so_first() -> None:
    items = await _stream(_runner(announce_after=0.05), "sleep 300ms")
    assert [type(item) for item in items] == [Note, StepOutput]
    assert items[0] == Note(ANNOUNCEMENT, "bench", TokenUsage())


async def test_the_announcement_is_not_also_counted_as_a_heartbeat() -> None:
    # Heartbeats still come every interval after the announcement, and only then.
    items = await _stream(_runner(announce_after=0.05, heartbeat_interval=0.2), "sleep 500ms")
    kinds = [type(item).__name__ for item in items]
    assert kinds[0] == "Note"
    assert kinds[-1] == "StepOutput"
    assert 1 <= kinds.count("Heartbeat") <= 3, kinds


class _Chatty:
    """Says something at once and ends at once."""

    name = "bench"

    async def aclose(self) -> None:
        """Holds nothing."""

    async def run(self, request: StepRequest, persona: Any, **options: Any) -> StepOutput:
        options["progress"]("looked at the request")
        return await BenchProvider().run(request, persona, **options)


async def test_an_attempt_with_something_to_say_announces_itself_before_it() -> None:
    items = await _stream(_runner(announce_after=10.0, provider=_Chatty()), "")
    notes = [item.message for item in items if isinstance(item, Note)]
    assert notes == [ANNOUNCEMENT, "looked at the request"]
    assert isinstance(items[-1], StepOutput)
    assert not any(isinstance(item, Heartbeat) for item in items)


class _Metered:
    """Records what its call spent and ends at once (as a quick model call would)."""

    name = "bench"

    async def aclose(self) -> None:
        """Holds nothing."""

    async def run(self, request: StepRequest, persona: Any, **options: Any) -> StepOutput:
        options["meter"].start_call()
        options["meter"].record("bench", input_tokens=3, output_tokens=4)
        return await BenchProvider().run(request, persona, **options)


async def test_usage_recorded_as_the_attempt_ends_goes_with_its_output_alone() -> None:
    items = await _stream(_runner(announce_after=10.0, provider=_Metered()), "")
    assert [type(item) for item in items] == [StepOutput]


async def test_work_that_ends_as_the_silence_runs_out_sends_no_heartbeat_first() -> None:
    # The work's end and the heartbeat's interval fall due in the same turn of the loop
    # (the loop was blocked past both): the output is all there is to say.
    runner = _runner(announce_after=10.0, heartbeat_interval=0.15)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, time.sleep, 0.25)  # blocks the loop past 0.1 s and 0.15 s
    items = await _stream(runner, "sleep 100ms")
    assert [type(item) for item in items] == [StepOutput]

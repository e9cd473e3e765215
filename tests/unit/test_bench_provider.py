"""The worker's bench provider: what it accepts, what it returns, and when it is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from maestro.core.errors import Code, InvalidArgument
from maestro.personas import get_persona
from persona_service.__main__ import build_providers
from persona_service.bench_provider import BENCH_DISABLED, BenchProvider, sleep_of
from persona_service.models import FailureKind, ProviderNotConfigured, StepFailed, StepRequest
from persona_service.providers import make_provider
from persona_service.runner import StepRunner
from persona_service.settings import WorkerSettings


def test_instructions_name_the_sleep() -> None:
    assert sleep_of("") == timedelta(0)
    assert sleep_of("  ") == timedelta(0)
    assert sleep_of("sleep 100ms") == timedelta(milliseconds=100)
    assert sleep_of(" sleep 1m30s ") == timedelta(seconds=90)


@pytest.mark.parametrize("text", ["nap 1s", "sleep", "sleep soon", "sleep 0s", "100ms"])
def test_other_instructions_are_refused_with_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        sleep_of(text)
    assert caught.value.field == "instructions"


def _request(instructions: str) -> StepRequest:
    return StepRequest(
        run_id="r1",
        step_id="s0-1",
        attempt=2,
        persona="backend_developer",
        requirement="benchmark",
        instructions=instructions,
        provider="bench",
    )


async def test_a_no_op_step_returns_one_small_file_labelled_bench() -> None:
    persona = get_persona("backend_developer")
    assert persona is not None
    notes: list[str] = []
    output = await BenchProvider().run(_request(""), persona, timeout=5.0, progress=notes.append)
    assert (output.provider, output.model) == ("bench", "bench")
    assert [(f.path, f.content) for f in output.files] == [("bench/s0-1.txt", "s0-1 attempt 2\n")]
    assert output.usage.input_tokens == output.usage.output_tokens == 0
    assert notes == []


async def test_a_sleep_longer_than_the_attempt_is_a_timeout() -> None:
    persona = get_persona("backend_developer")
    assert persona is not None
    with pytest.raises(StepFailed, match="longer than the attempt") as caught:
        await BenchProvider().run(
            _request("sleep 10m"), persona, timeout=0.01, progress=lambda _: None
        )
    assert caught.value.kind is FailureKind.RETRYABLE


def test_the_worker_serves_bench_only_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert set(build_providers(WorkerSettings())) == {"offline"}
    monkeypatch.setenv("MAESTRO_WORKER_ENABLE_BENCH_PROVIDER", "true")
    enabled = build_providers(WorkerSettings())
    assert set(enabled) == {"offline", "bench"}
    assert isinstance(enabled["bench"], BenchProvider)


def test_a_request_for_bench_on_a_worker_without_it_is_a_failed_precondition() -> None:
    offline = make_provider("offline", WorkerSettings())
    runner = StepRunner({"offline": offline}, default_provider="offline", heartbeat_interval=5)
    with pytest.raises(ProviderNotConfigured) as caught:
        runner.provider_for("bench")
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert caught.value.message == BENCH_DISABLED
    assert "MAESTRO_WORKER_ENABLE_BENCH_PROVIDER=true" in BENCH_DISABLED

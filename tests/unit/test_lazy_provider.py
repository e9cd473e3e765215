"""The lazily built provider: built once, on first use or after its warm-up delay."""

from __future__ import annotations

import asyncio
import threading

from maestro.personas import PERSONAS
from persona_service.lazy_provider import LazyProvider
from persona_service.models import StepRequest
from persona_service.offline import OfflineProvider


class CountingBuild:
    """Builds the real offline provider, counting how often it is asked to."""

    def __init__(self) -> None:
        self.calls = 0
        self.built = threading.Event()

    def __call__(self) -> OfflineProvider:
        self.calls += 1
        self.built.set()
        return OfflineProvider()


def _no_progress(note: str) -> None:
    del note


async def _run_one(provider: LazyProvider) -> int:
    request = StepRequest.model_validate(
        {
            "run_id": "run-1",
            "step_id": "analysis",
            "attempt": 1,
            "persona": "requirements_analyst",
            "requirement": "A REST API with user registration and login",
        }
    )
    output = await provider.run(
        request, PERSONAS["requirements_analyst"], timeout=10, progress=_no_progress
    )
    return len(output.files)


async def test_warm_up_builds_only_after_its_delay() -> None:
    build = CountingBuild()
    provider = LazyProvider("offline", build)
    provider.warm_up(0.2)
    await asyncio.sleep(0.05)
    assert build.calls == 0, "the warm-up began before its delay"
    # A loaded machine may be late, but the warm-up must happen.
    assert await asyncio.to_thread(build.built.wait, 10)
    assert build.calls == 1
    assert await _run_one(provider) > 0
    assert build.calls == 1, "a step after the warm-up built the provider again"
    await provider.aclose()


async def test_a_step_before_the_delay_builds_it_and_the_warm_up_does_not_again() -> None:
    build = CountingBuild()
    provider = LazyProvider("offline", build)
    provider.warm_up(0.2)
    assert await _run_one(provider) > 0
    assert build.calls == 1
    await asyncio.sleep(0.4)
    assert build.calls == 1
    await provider.aclose()


async def test_closing_before_the_delay_cancels_the_warm_up() -> None:
    build = CountingBuild()
    provider = LazyProvider("offline", build)
    provider.warm_up(0.1)
    await provider.aclose()
    await asyncio.sleep(0.3)
    assert build.calls == 0

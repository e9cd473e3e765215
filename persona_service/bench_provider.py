"""The bench provider: a step body that does only what a benchmark needs.

It sleeps for the duration the step's instructions name (``sleep 100ms``; empty
instructions mean no sleep at all) and returns one small file, so `python -m bench`
measures Maestro rather than a model or a template renderer. Results are labelled
provider="bench", model="bench". A worker serves it only when
MAESTRO_WORKER_ENABLE_BENCH_PROVIDER=true; otherwise a request for it is refused
with FAILED_PRECONDITION (see `persona_service.runner`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from maestro.core.errors import InvalidArgument
from maestro.personas import Persona
from maestro.workflow.durations import format_duration, parse_duration
from persona_service.call_admission import CallAdmission
from persona_service.models import (
    FailureKind,
    ProgressCallback,
    StepFailed,
    StepOutput,
    StepRequest,
    TextFile,
    TokenUsage,
)
from persona_service.usage import UsageMeter

BENCH = "bench"
BENCH_DISABLED = (
    "the bench provider is disabled on this worker; start the worker with "
    "MAESTRO_WORKER_ENABLE_BENCH_PROVIDER=true to use it"
)
_SLEEP = "sleep"


def sleep_of(instructions: str) -> timedelta:
    """How long a step sleeps: ``""`` is no sleep, ``"sleep 250ms"`` is 250 ms.

    Raises:
        InvalidArgument: anything else, or a duration that `parse_duration` refuses.
    """
    text = instructions.strip()
    if not text:
        return timedelta(0)
    verb, _, duration = text.partition(" ")
    if verb != _SLEEP or not duration.strip():
        raise InvalidArgument(
            "instructions",
            f"the bench provider takes '' or 'sleep DURATION' (e.g. sleep 100ms), got {text!r}",
        )
    try:
        return parse_duration(duration.strip())
    except ValueError as err:
        raise InvalidArgument("instructions", str(err)) from None


class BenchProvider:
    """Sleeps as the step says and writes `bench/<step id>.txt`."""

    name: str = BENCH

    async def aclose(self) -> None:
        """Nothing to release: the bench provider holds no connections."""

    async def run(
        self,
        request: StepRequest,
        persona: Persona,
        *,
        timeout: float,  # noqa: ASYNC109 - the Provider protocol's explicit budget
        progress: ProgressCallback,
        meter: UsageMeter | None = None,
        admission: CallAdmission | None = None,
    ) -> StepOutput:
        """Sleeps for the step's duration and returns one small file.

        Raises:
            InvalidArgument: the instructions are not '' or 'sleep DURATION'.
            StepFailed: (retryable) the sleep is longer than the attempt's time.
        """
        pause = sleep_of(request.instructions)
        seconds = pause.total_seconds()
        if seconds > timeout:
            await asyncio.sleep(timeout)
            raise StepFailed(
                FailureKind.RETRYABLE,
                "attempt_timeout",
                f"bench step sleeps {format_duration(pause)}, longer than the attempt's "
                f"{timeout:.3g} s",
            )
        if seconds > 0:
            await asyncio.sleep(seconds)
        slept = format_duration(pause) if seconds > 0 else "nothing"
        return StepOutput(
            summary=f"bench step slept {slept} (no model was called)",
            files=(
                TextFile(
                    path=f"bench/{request.step_id}.txt",
                    content=f"{request.step_id} attempt {request.attempt}\n",
                ),
            ),
            usage=TokenUsage(),
            provider=self.name,
            model=BENCH,
        )

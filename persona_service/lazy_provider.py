"""A provider built on first use, and warmed up in the background.

The anthropic SDK takes most of a worker's start-up (about 0.7 of 0.9 s) and memory:
built eagerly, it would keep a worker NOT_SERVING that long on every start and every
rollout. This wrapper lets the worker serve at once, and builds the real provider on a
thread when a step first needs it, or when `warm_up`'s delay has passed.

The delay is for the services that start beside the worker: importing the SDK takes
about 1.3 s of CPU. Begun as soon as the worker served, it had used 160-290 ms of a
2-core machine's CPU by the time the rest of a local stack was healthy (measured with
PostgreSQL and the anthropic provider configured). A step that comes first does not
wait for the delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from maestro.personas import Persona
from persona_service.call_admission import CallAdmission
from persona_service.models import ProgressCallback, Provider, StepOutput, StepRequest
from persona_service.usage import UsageMeter

log = logging.getLogger(__name__)


class LazyProvider:
    """Looks like the provider `build` returns; builds it once, when first needed."""

    def __init__(self, name: str, build: Callable[[], Provider]) -> None:
        self.name = name
        self._build = build
        self._provider: Provider | None = None
        self._building: asyncio.Task[Provider] | None = None
        self._warm_up: asyncio.TimerHandle | None = None

    async def _get(self) -> Provider:
        if self._provider is None:
            if self._building is None:
                # On a thread: importing a big SDK must not stall the event loop.
                self._building = asyncio.create_task(asyncio.to_thread(self._build))
            self._provider = await asyncio.shield(self._building)
        return self._provider

    def warm_up(self, delay: float) -> None:
        """Builds the provider in the background `delay` seconds from now, unless a step
        has needed it by then (call once the worker is serving)."""
        self._warm_up = asyncio.get_running_loop().call_later(delay, self._start_warm_up)

    def _start_warm_up(self) -> None:
        task = asyncio.create_task(self._get())
        task.add_done_callback(_log_failure)

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
        provider = await self._get()
        return await provider.run(
            request, persona, timeout=timeout, progress=progress, meter=meter, admission=admission
        )

    async def aclose(self) -> None:
        if self._warm_up is not None:
            self._warm_up.cancel()
        if self._building is not None and not self._building.done():
            self._building.cancel()
        if self._provider is not None:
            await self._provider.aclose()


def _log_failure(task: asyncio.Task[Provider]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("building the %s provider failed", "anthropic", exc_info=task.exception())

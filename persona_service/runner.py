"""Runs one step attempt and reports on it as a stream (no grpc here).

The provider works in a task; meanwhile the stream carries its progress notes and a
heartbeat every interval, so the scheduler can tell a slow attempt from a lost one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from maestro.personas import get_persona
from persona_service.models import (
    Provider,
    ProviderNotConfigured,
    StepOutput,
    StepRequest,
    UnknownPersona,
)

log = logging.getLogger(__name__)

# Keep back a little of the caller's deadline so our answer arrives before it expires.
DEADLINE_MARGIN_SECONDS = 1.0


class Heartbeat:
    """The attempt is alive."""


@dataclass(frozen=True)
class Note:
    """A progress note, labelled with the provider doing the work."""

    message: str
    provider: str


class StepRunner:
    """Chooses the persona and provider for a request and runs it."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        default_provider: str,
        heartbeat_interval: float,
    ) -> None:
        self._providers = providers
        self._default = default_provider
        self._heartbeat_interval = heartbeat_interval

    @property
    def default_provider(self) -> str:
        return self._default

    def provider_for(self, requested: str) -> Provider:
        name = requested or self._default
        provider = self._providers.get(name)
        if provider is None:
            if name == "anthropic":
                raise ProviderNotConfigured(
                    "the anthropic provider needs ANTHROPIC_API_KEY on the persona worker"
                )
            raise ProviderNotConfigured(f"provider {name!r} is not available on this worker")
        return provider

    async def run(
        self, request: StepRequest, *, time_remaining: float
    ) -> AsyncIterator[Heartbeat | Note | StepOutput]:
        """Yields heartbeats and progress notes, then the output.

        Raises:
            MaestroError: the provider's failure, mapped to its status code upstream.
        """
        persona = get_persona(request.persona)
        if persona is None:
            raise UnknownPersona(request.persona)
        provider = self.provider_for(request.provider)
        timeout = max(time_remaining - DEADLINE_MARGIN_SECONDS, 0.1)
        notes: asyncio.Queue[str] = asyncio.Queue()
        work = asyncio.create_task(
            provider.run(request, persona, timeout=timeout, progress=notes.put_nowait)
        )
        yield Note(f"{persona.role} working with the {provider.name} provider", provider.name)
        try:
            while not work.done():
                next_note = asyncio.create_task(notes.get())
                done, _ = await asyncio.wait(
                    {work, next_note},
                    timeout=self._heartbeat_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if next_note in done:
                    yield Note(next_note.result(), provider.name)
                else:
                    next_note.cancel()
                    if not done:
                        yield Heartbeat()
            while not notes.empty():
                yield Note(notes.get_nowait(), provider.name)
            yield work.result()
        finally:
            # The caller went away (cancelled run, deadline): stop the provider too.
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work

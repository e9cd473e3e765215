"""Runs one step attempt and reports on it as a stream (no grpc here).

The provider works in a task; meanwhile the stream carries its progress notes, a
heartbeat whenever a model call starts or ends (each turn of a loop) and at least
every interval, each with the attempt's usage so far. The stream ends with the output
or with a Failure: every failure of the work itself (model and API errors, bad or
missing output, a conflict, an exhausted budget) is a Failure message, never an
exception, so the scheduler can tell it from a failure of the platform.

An attempt that is still working after `announce_after` (or that has something else
to say first) begins with a note of who works on it with which provider. One that
ends sooner sends none: its output or failure names the provider, and a note stored
in the same instant as the result tells a follower nothing. That note was a quarter
of the events of a run of quick steps, and on W4 (`python -m bench`) about a third of
the scheduler's CPU per step: it arrived alone, long before the result, and was
committed and streamed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from maestro.personas import get_persona
from persona_service.bench_provider import BENCH, BENCH_DISABLED
from persona_service.call_admission import CallAdmission, CallAsk
from persona_service.catalog import PriceTable
from persona_service.contract import check_deliverables, check_ownership
from persona_service.models import (
    FailureKind,
    Provider,
    ProviderNotConfigured,
    StepFailed,
    StepOutput,
    StepRequest,
    TokenUsage,
    UnknownPersona,
)
from persona_service.rate_limits import RateLimits
from persona_service.usage import UsageMeter

log = logging.getLogger(__name__)

# Keep back a little of the caller's deadline so our final message arrives before it.
DEADLINE_MARGIN_SECONDS = 1.0

ANNOUNCE_AFTER_SECONDS = 1.0
"""How long an attempt works before it says who is working on it (see above): about
when a person watching starts to wonder whether anything is happening."""


@dataclass(frozen=True)
class Heartbeat:
    """The attempt is alive; `usage` is what it has spent so far."""

    usage: TokenUsage


@dataclass(frozen=True)
class Note:
    """A progress note, labelled with the provider doing the work."""

    message: str
    provider: str
    usage: TokenUsage


@dataclass(frozen=True)
class Failure:
    """The work failed (see worker.proto's StepFailure)."""

    kind: FailureKind
    reason: str
    message: str
    retry_after: float | None
    usage: TokenUsage
    provider: str
    model: str
    transcript: bytes = b""
    rate_limits: RateLimits | None = None

    @classmethod
    def of(
        cls,
        err: StepFailed,
        *,
        provider: str,
        usage: TokenUsage,
        rate_limits: RateLimits | None = None,
    ) -> Failure:
        return cls(
            kind=err.kind,
            reason=err.reason,
            message=err.message,
            retry_after=err.retry_after,
            usage=err.usage if err.usage is not None else usage,
            provider=provider,
            model=err.model,
            transcript=err.transcript,
            rate_limits=rate_limits,
        )


class StepRunner:
    """Chooses the persona and provider for a request and runs it.

    Args:
        providers: The providers this worker serves, by name.
        default_provider: Used when a request names none.
        heartbeat_interval: The longest silence between two stream messages.
        prices: Costs the usage of every attempt.
        announce_after: When a still-working attempt's first note goes out at the latest.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        default_provider: str,
        heartbeat_interval: float,
        prices: PriceTable | None = None,
        announce_after: float = ANNOUNCE_AFTER_SECONDS,
    ) -> None:
        self._providers = providers
        self._default = default_provider
        self._heartbeat_interval = heartbeat_interval
        self._prices = prices or PriceTable()
        self._announce_after = announce_after

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
            if name == BENCH:
                raise ProviderNotConfigured(BENCH_DISABLED)
            raise ProviderNotConfigured(f"provider {name!r} is not available on this worker")
        return provider

    async def run(
        self,
        request: StepRequest,
        *,
        time_remaining: float,
        admission: CallAdmission | None = None,
    ) -> AsyncIterator[Heartbeat | Note | CallAsk | StepOutput | Failure]:
        """Yields heartbeats, progress notes and asks for model calls (with
        `admission`), then the output or a Failure.

        Raises:
            UnknownPersona, ProviderNotConfigured: the request cannot run here.
        """
        persona = get_persona(request.persona)
        if persona is None:
            raise UnknownPersona(request.persona)
        provider = self.provider_for(request.provider)
        timeout = max(time_remaining - DEADLINE_MARGIN_SECONDS, 0.1)
        # Whatever the loop below waits for sets one event: a progress note, a change
        # of usage, the work's end, and for a rate-limited model an ask for a call. A
        # task per source and per wait (and their cancellation) cost about 18 of the
        # 123 us in which a worker converted and ran a step that ends at once.
        notes: deque[str] = deque()
        stirred = asyncio.Event()
        usage_changed = False

        def note(text: str) -> None:
            notes.append(text)
            stirred.set()

        def usage_change() -> None:
            nonlocal usage_changed
            usage_changed = True
            stirred.set()

        def stir(_: object) -> None:
            stirred.set()

        meter = UsageMeter(self._prices, request.budget, on_change=usage_change)
        work = asyncio.create_task(
            provider.run(
                request,
                persona,
                timeout=timeout,
                progress=note,
                meter=meter,
                admission=admission,
            )
        )
        work.add_done_callback(stir)
        loop = asyncio.get_running_loop()
        announce_at: float | None = loop.time() + self._announce_after
        announcement = f"{persona.role} working with the {provider.name} provider"
        next_ask: asyncio.Task[CallAsk] | None = None
        try:
            while not work.done():
                if admission is not None and next_ask is None:
                    next_ask = asyncio.create_task(admission.next_ask())
                    next_ask.add_done_callback(stir)
                silence = self._heartbeat_interval
                if announce_at is not None:
                    silence = min(silence, max(announce_at - loop.time(), 0.0))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(silence):
                        await stirred.wait()
                ended = work.done()
                asked = next_ask is not None and next_ask.done()
                # The silence ran out with nothing to say. (The work's end sets the event
                # a loop turn after it: it counts at once.)
                quiet = not (stirred.is_set() or ended or asked)
                stirred.clear()
                if announce_at is not None and (not ended or notes or asked):
                    # Still working, or about to say more than its output will: the
                    # announcement first.
                    announce_at = None
                    yield Note(announcement, provider.name, meter.total)
                    if quiet:
                        continue  # that wait was the announcement's, not a heartbeat's
                while notes:
                    yield Note(notes.popleft(), provider.name, meter.total)
                if asked and next_ask is not None:
                    ask, next_ask = next_ask.result(), None
                    yield ask
                if (usage_changed and not ended) or quiet:
                    # (Usage that changed as the work ended goes with its output.)
                    usage_changed = False
                    yield Heartbeat(meter.total)
            if announce_at is not None and notes:
                yield Note(announcement, provider.name, meter.total)
            while notes:
                yield Note(notes.popleft(), provider.name, meter.total)
            try:
                output = work.result()
                try:
                    if provider.name != BENCH:  # a bench step is no persona's work
                        check_ownership(request, output.files)
                        check_deliverables(persona, output.files)
                except StepFailed as broken:
                    broken.usage, broken.model = output.usage, output.model
                    broken.transcript = output.transcript
                    raise
            except StepFailed as failure:
                log.warning(
                    "step %s attempt %d failed (%s, %s): %s",
                    request.step_id,
                    request.attempt,
                    failure.kind,
                    failure.reason,
                    failure.message,
                )
                yield Failure.of(
                    failure,
                    provider=provider.name,
                    usage=meter.total,
                    rate_limits=meter.report(),
                )
                return
            report = meter.report()
            if report is not None:
                output = output.model_copy(update={"rate_limits": report})
            yield output
        finally:
            # The caller went away (cancelled run, deadline): stop the waits and the
            # provider too, so no task outlives the attempt.
            if next_ask is not None:
                next_ask.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work

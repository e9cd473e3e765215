"""The worker's metrics and spans: every step attempt, its outcome, tokens and cost.

`MeteredStepRunner` is the runner the worker serves with: it counts each attempt when
its stream ends (failed attempts too, since their tokens are billed), and opens the
attempt's span, which names the run, step and attempt; the model calls made inside
it are its children (see `persona_service/claude.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from prometheus_client import Counter, Gauge, Histogram

from maestro.core.tracing import ATTEMPT, RUN_ID, STEP_ID, span
from persona_service.call_admission import CallAdmission, CallAsk
from persona_service.models import StepOutput, StepRequest, TokenUsage
from persona_service.runner import Failure, Heartbeat, Note, StepRunner

ATTEMPTS = Counter(
    "maestro_worker_attempts_total",
    "Step attempts this worker ran, by how they ended (succeeded, or the failure's kind; "
    "cancelled when the caller went away).",
    ["persona", "provider", "outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "maestro_worker_attempt_duration_seconds",
    "Wall time of a step attempt on this worker.",
    ["persona", "provider"],
    buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
IN_FLIGHT = Gauge("maestro_worker_attempts_in_flight", "Step attempts running on this worker.")
TOKENS = Counter(
    "maestro_tokens_total",
    "Tokens billed by the model, by persona, model and kind (input, output, cache_read, "
    "cache_write), failed attempts included.",
    ["persona", "model", "kind"],
)
COST = Counter(
    "maestro_cost_usd_total",
    "What the model calls cost in US dollars (from the price table), by persona and model.",
    ["persona", "model"],
)


def record_usage(persona: str, model: str, usage: TokenUsage) -> None:
    """Adds one attempt's usage to the token and cost counters."""
    model = model or "none"
    for kind, value in (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_read", usage.cache_read_input_tokens),
        ("cache_write", usage.cache_creation_input_tokens),
    ):
        if value:
            TOKENS.labels(persona, model, kind).inc(value)
    if usage.cost_usd:
        COST.labels(persona, model).inc(usage.cost_usd)


class MeteredStepRunner(StepRunner):
    """A StepRunner whose attempts are counted, timed and traced."""

    async def run(
        self,
        request: StepRequest,
        *,
        time_remaining: float,
        admission: CallAdmission | None = None,
    ) -> AsyncIterator[Heartbeat | Note | CallAsk | StepOutput | Failure]:
        attributes: dict[str, str | int] = {
            RUN_ID: request.run_id,
            STEP_ID: request.step_id,
            ATTEMPT: request.attempt,
            "maestro.persona": request.persona,
        }
        provider = request.provider or self.default_provider
        outcome = "cancelled"
        began = time.perf_counter()
        IN_FLIGHT.inc()
        try:
            with span("maestro.step_attempt", attributes):
                async for item in super().run(
                    request, time_remaining=time_remaining, admission=admission
                ):
                    if isinstance(item, StepOutput):
                        outcome, provider = "succeeded", item.provider
                        record_usage(request.persona, item.model, item.usage)
                    elif isinstance(item, Failure):
                        outcome, provider = str(item.kind), item.provider
                        record_usage(request.persona, item.model, item.usage)
                    yield item
        except (asyncio.CancelledError, GeneratorExit):
            raise  # the caller went away: "cancelled", unless an outcome came first
        except Exception:
            outcome = "error"
            raise
        finally:
            IN_FLIGHT.dec()
            ATTEMPTS.labels(request.persona, provider, outcome).inc()
            ATTEMPT_SECONDS.labels(request.persona, provider).observe(time.perf_counter() - began)

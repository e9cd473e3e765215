"""Chooses a provider by name, failing at once when it cannot run here."""

from __future__ import annotations

from maestro.core.errors import InvalidArgument
from persona_service.bench_provider import BenchProvider
from persona_service.checks import CheckRunner
from persona_service.lazy_provider import LazyProvider
from persona_service.models import Provider, ProviderNotConfigured
from persona_service.offline import OfflineProvider
from persona_service.settings import WorkerSettings

PROVIDER_NAMES = ("anthropic", "offline", "bench")


def make_provider(
    name: str, settings: WorkerSettings, *, checks: CheckRunner | None = None
) -> Provider:
    """Builds the provider registered under `name`.

    Args:
        name: "anthropic", "offline" or "bench" (the benchmark's step body).
        settings: The worker's settings (key, model, effort, limits, prices).
        checks: Runs sandbox checks for the agent loop's run_checks tool.

    Raises:
        ProviderNotConfigured: anthropic was asked for without an API key.
        InvalidArgument: no provider has this name.
    """
    if name == "anthropic":
        key = settings.anthropic_api_key
        if key is None or not key.get_secret_value():
            raise ProviderNotConfigured("the anthropic provider needs ANTHROPIC_API_KEY")
        secret = key.get_secret_value()

        def build() -> Provider:
            # Imported here, not at the top: the SDK is most of a worker's start-up time
            # (0.7 of 0.9 s) and memory (about 45 MiB); offline never uses it.
            from persona_service.llm import AnthropicProvider

            return AnthropicProvider(
                secret,
                settings.anthropic_model,
                base_url=settings.anthropic_base_url,
                max_tokens=settings.anthropic_max_tokens,
                max_retries=settings.anthropic_max_retries,
                effort=settings.anthropic_effort,
                idle_timeout=settings.idle_timeout_seconds,
                quiet_note_every=settings.quiet_note_seconds,
                overload_retry_after=settings.overload_retry_after_seconds,
                max_turns=settings.max_turns,
                context_budget_bytes=settings.context_budget_bytes,
                prices=settings.prices,
                checks=checks,
            )

        return LazyProvider("anthropic", build)
    if name == "offline":
        return OfflineProvider()
    if name == "bench":
        return BenchProvider()
    raise InvalidArgument(
        "provider", f"unknown provider {name!r}; expected one of {', '.join(PROVIDER_NAMES)}"
    )

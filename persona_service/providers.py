"""Chooses a provider by name, failing at once when it cannot run here."""

from __future__ import annotations

from maestro.core.errors import InvalidArgument
from persona_service.models import Provider, ProviderNotConfigured
from persona_service.offline import OfflineProvider

PROVIDER_NAMES = ("anthropic", "offline")


def make_provider(
    name: str,
    *,
    api_key: str | None,
    model: str,
    base_url: str | None,
    max_tokens: int,
    max_retries: int,
) -> Provider:
    """Builds the provider registered under `name`.

    Args:
        name: "anthropic" or "offline".
        api_key: The Anthropic API key (unused by the offline provider).
        model: The Anthropic model name.
        base_url: Another Anthropic endpoint, or None for the SDK's default.
        max_tokens: The output budget of one Anthropic call.
        max_retries: Retries inside the SDK (0: the scheduler owns retries).

    Raises:
        ProviderNotConfigured: anthropic was asked for without an API key.
        InvalidArgument: no provider has this name.
    """
    if name == "anthropic":
        if not api_key:
            raise ProviderNotConfigured("the anthropic provider needs ANTHROPIC_API_KEY")
        # Imported here, not at the top: the SDK is most of an offline worker's start-up
        # time (0.8 of 0.9 s) and memory (about 45 MiB), and offline never uses it.
        from persona_service.llm import AnthropicProvider

        return AnthropicProvider(
            api_key,
            model,
            base_url=base_url,
            max_tokens=max_tokens,
            max_retries=max_retries,
        )
    if name == "offline":
        return OfflineProvider()
    raise InvalidArgument(
        "provider", f"unknown provider {name!r}; expected one of {', '.join(PROVIDER_NAMES)}"
    )

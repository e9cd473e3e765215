"""What the worker knows about Claude models: prices and which request settings each
accepts. A model missing here is still called (its name is passed through as given);
it is sent no effort or thinking setting it was not asked for, and its cost counts as
zero until a price is configured (MAESTRO_WORKER_PRICES).

Sources, read 2026-10 (see the README's "Models, effort and cost"):
- prices: https://platform.claude.com/docs/en/about-claude/pricing and each model's
  page (Claude Sonnet 5.5's cache reads are $0.10/MTok per its migration guide,
  half the Sonnet 5 rate);
- effort: https://platform.claude.com/docs/en/build-with-claude/effort (supported
  models list);
- adaptive thinking: the models' pages and the thinking troubleshooting page (manual
  thinking budgets and `thinking: disabled` are refused by current models).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class TierPrice(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write_5m: float = Field(ge=0)
    cache_write_1h: float = Field(ge=0)
    cache_read: float = Field(ge=0)


class ModelPrice(TierPrice):
    """A model's prices; `long_prompt` applies to every token of a request whose prompt
    (input plus cache reads and writes) is over `long_prompt_threshold` tokens."""

    long_prompt_threshold: int = Field(default=0, ge=0)
    long_prompt: TierPrice | None = None


def _p(i: float, o: float, w5: float, w1: float, r: float, **long: TierPrice | int) -> ModelPrice:
    return ModelPrice(input=i, output=o, cache_write_5m=w5, cache_write_1h=w1, cache_read=r, **long)


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "claude-fable-5-1": _p(10, 50, 12.5, 20, 0.25),
    "claude-mythos-5-1": _p(10, 50, 12.5, 20, 0.25),
    "claude-fable-5": _p(10, 50, 12.5, 20, 1.0),
    "claude-mythos-5": _p(10, 50, 12.5, 20, 1.0),
    "claude-opus-5-5": _p(4, 20, 5, 8, 0.20),
    "claude-opus-5": _p(5, 25, 6.25, 10, 0.50),
    "claude-opus-4-8": _p(5, 25, 6.25, 10, 0.50),
    "claude-opus-4-7": _p(5, 25, 6.25, 10, 0.50),
    "claude-opus-4-6": _p(5, 25, 6.25, 10, 0.50),
    "claude-opus-4-5": _p(5, 25, 6.25, 10, 0.50),
    "claude-sonnet-5-5": _p(2, 10, 2.5, 4, 0.10),
    "claude-sonnet-5": _p(2, 10, 2.5, 4, 0.20),
    "claude-sonnet-4-6": _p(3, 15, 3.75, 6, 0.30),
    "claude-sonnet-4-5": _p(3, 15, 3.75, 6, 0.30),
    "claude-haiku-5-5": _p(
        0.10,
        0.50,
        0.125,
        0.20,
        0.01,
        long_prompt_threshold=100_000,
        long_prompt=TierPrice(
            input=0.50, output=2.50, cache_write_5m=0.625, cache_write_1h=1.0, cache_read=0.05
        ),
    ),
    "claude-haiku-4-5": _p(1, 5, 1.25, 2, 0.10),
}

# Models that take `output_config.effort`.
_EFFORT = frozenset(
    {
        "claude-fable-5-1",
        "claude-mythos-5-1",
        "claude-fable-5",
        "claude-mythos-5",
        "claude-mythos-preview",
        "claude-opus-5-5",
        "claude-opus-5",
        "claude-opus-4-8",
        "claude-opus-4-7",
        "claude-opus-4-6",
        "claude-opus-4-5",
        "claude-sonnet-5-5",
        "claude-sonnet-5",
        "claude-sonnet-4-6",
        "claude-haiku-5-5",
    }
)
# Models that think with `thinking: {type: adaptive}` (the default on the newest ones;
# sent explicitly so that 4.6 models think too).
_ADAPTIVE = _EFFORT - {"claude-opus-4-5"}

EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")

_DATED = re.compile(r"-\d{8}$")


def base_name(model: str) -> str:
    """The model's name without a date suffix or a context-window tag."""
    name = model.split("[", 1)[0]
    return _DATED.sub("", name)


def is_known(model: str) -> bool:
    """True when the worker knows the model's settings (not needed to call it)."""
    name = base_name(model)
    return name in DEFAULT_PRICES or name in _EFFORT


def supports_effort(model: str) -> bool:
    """True when the model is known to take `output_config.effort`."""
    return base_name(model) in _EFFORT


def supports_adaptive_thinking(model: str) -> bool:
    """True when the model is known to think with `thinking: {type: adaptive}`."""
    return base_name(model) in _ADAPTIVE


class PriceTable:
    """The default prices with configured ones laid over them."""

    def __init__(self, overrides: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **(overrides or {})}

    def price(self, model: str) -> ModelPrice | None:
        """The model's price, by exact name first, then without a date suffix."""
        return self._prices.get(model) or self._prices.get(base_name(model))

    def cost(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read: int,
        cache_write_5m: int,
        cache_write_1h: int,
    ) -> float | None:
        """USD for one call's tokens, or None when the model has no price."""
        price = self.price(model)
        if price is None:
            return None
        tier: TierPrice = price
        prompt = input_tokens + cache_read + cache_write_5m + cache_write_1h
        if (
            price.long_prompt
            and price.long_prompt_threshold
            and prompt > price.long_prompt_threshold
        ):
            tier = price.long_prompt
        return (
            input_tokens * tier.input
            + output_tokens * tier.output
            + cache_read * tier.cache_read
            + cache_write_5m * tier.cache_write_5m
            + cache_write_1h * tier.cache_write_1h
        ) / 1_000_000

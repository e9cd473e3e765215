"""Declared fallbacks: where a step goes when its model cannot serve it.

`fallback: [{model: claude-haiku-4-5}, {provider: offline}]`, per step or for the
whole workflow, in order. A fallback is used only when the primary cannot serve: its
retryable failures used up the step's attempts, or its model's circuit breaker is
open. Every event and result of a fallback attempt names what was used and why.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from maestro.workflow.limits import MAX_NAME_CHARS, shown

MAX_FALLBACKS = 4


class Fallback(BaseModel):
    """One alternative: another model (same provider), or another provider.

    Attributes:
        model: The model to call instead; None keeps the step's model.
        provider: `anthropic` or `offline` (deterministic, no network, always
            labelled); None keeps the run's provider.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)
    provider: Literal["anthropic", "offline"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = sorted(str(k) for k in value if k not in ("model", "provider"))
            if unknown:
                raise ValueError(
                    f"unknown fallback field {shown(unknown[0])} (allowed: model, provider)"
                )
            if not value:
                raise ValueError("a fallback needs a model, a provider or both")
        return value

    @model_validator(mode="after")
    def _offline_has_no_model(self) -> Self:
        if self.provider == "offline" and self.model is not None:
            raise ValueError("the offline provider takes no model")
        return self

    def describe(self) -> str:
        """`model claude-haiku-4-5`, `provider offline`, or both."""
        parts = []
        if self.provider:
            parts.append(f"provider {self.provider}")
        if self.model:
            parts.append(f"model {self.model}")
        return ", ".join(parts)


Fallbacks = tuple[Fallback, ...]

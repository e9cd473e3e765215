"""Persona worker settings, from MAESTRO_WORKER_* (and ANTHROPIC_API_KEY)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from maestro.core.settings import ServiceSettings
from persona_service.catalog import EFFORT_LEVELS, ModelPrice


class WorkerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAESTRO_WORKER_", frozen=True, extra="ignore")

    provider: Literal["anthropic", "offline"] | None = Field(
        default=None, description="default provider; unset = anthropic when a key is set"
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY", "MAESTRO_WORKER_ANTHROPIC_API_KEY"),
    )
    anthropic_model: str = Field(
        default="claude-sonnet-5-5",
        min_length=1,
        description="the model when a request names none; any name is passed through",
    )
    anthropic_effort: Literal["", "low", "medium", "high", "xhigh", "max"] = Field(
        default="",
        description=f"effort when a request names none ({', '.join(EFFORT_LEVELS)}); "
        "'' = the model's default",
    )
    anthropic_base_url: str | None = None
    anthropic_max_tokens: int = Field(
        default=32000, ge=256, le=128_000, description="the output budget of one call"
    )
    anthropic_max_retries: int = Field(default=0, ge=0, le=5)
    idle_timeout_seconds: float = Field(
        default=90.0, gt=0, description="a model stream silent this long ends the attempt"
    )
    quiet_note_seconds: float = Field(
        default=60.0,
        gt=0,
        description="while a model stream sends nothing, a progress note says so this often",
    )
    overload_retry_after_seconds: float = Field(
        default=30.0,
        ge=0,
        description="the retry hint sent with an overload failure when the API gives none",
    )
    max_turns: int = Field(default=40, ge=1, le=500, description="model calls per agent loop")
    context_budget_bytes: int = Field(
        default=128 * 1024, ge=1024, description="the most file content one prompt shows"
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="JSON: model -> {input, output, cache_write_5m, cache_write_1h, "
        "cache_read} in USD per million tokens, laid over the built-in table",
    )
    sandbox_address: str | None = Field(
        default=None, description="the sandbox service for the run_checks tool"
    )
    heartbeat_interval_seconds: float = Field(default=5.0, gt=0)
    enable_bench_provider: bool = Field(
        default=False, description="serve the `bench` provider (python -m bench only)"
    )
    max_step_seconds: float = Field(
        default=900.0, gt=0, description="the attempt's time when a caller sets no deadline"
    )

    @property
    def default_provider(self) -> str:
        if self.provider is not None:
            return self.provider
        return "anthropic" if self.anthropic_api_key else "offline"

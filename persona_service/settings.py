"""Persona worker settings, from MAESTRO_WORKER_* (and ANTHROPIC_API_KEY)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from maestro.core.settings import ServiceSettings


class WorkerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAESTRO_WORKER_", frozen=True, extra="ignore")

    provider: Literal["anthropic", "offline"] | None = Field(
        default=None, description="default provider; unset = anthropic when a key is set"
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY", "MAESTRO_WORKER_ANTHROPIC_API_KEY"),
    )
    anthropic_model: str = "claude-sonnet-4-6"
    anthropic_base_url: str | None = None
    anthropic_max_tokens: int = Field(default=16000, ge=256)
    anthropic_max_retries: int = Field(default=0, ge=0, le=5)
    heartbeat_interval_seconds: float = Field(default=5.0, gt=0)
    max_step_seconds: float = Field(
        default=900.0, gt=0, description="the attempt's time when a caller sets no deadline"
    )

    @property
    def default_provider(self) -> str:
        if self.provider is not None:
            return self.provider
        return "anthropic" if self.anthropic_api_key else "offline"

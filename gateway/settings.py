"""Gateway settings, from MAESTRO_GATEWAY_* environment variables."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from maestro.core.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAESTRO_GATEWAY_", frozen=True, extra="ignore")

    database: str = Field(
        validation_alias=AliasChoices("MAESTRO_GATEWAY_DATABASE", "MAESTRO_DATABASE_URL"),
        description="the schedulers' store (read only here): sqlite:///PATH or postgresql://...",
    )
    scheduler_address: str = Field(description="host:port of the scheduler")
    scheduler_timeout_seconds: float = Field(default=10.0, gt=0)
    event_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="safety net: how often followed runs are checked for a missed notification",
    )

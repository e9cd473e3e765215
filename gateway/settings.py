"""Gateway settings, from MAESTRO_GATEWAY_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from maestro.core.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAESTRO_GATEWAY_", frozen=True, extra="ignore")

    database: str = Field(description="sqlite:///PATH, the scheduler's store (read only here)")
    scheduler_address: str = Field(description="host:port of the scheduler")
    scheduler_timeout_seconds: float = Field(default=10.0, gt=0)
    event_poll_seconds: float = Field(
        default=0.05, gt=0, description="how often a live event stream looks for new events"
    )

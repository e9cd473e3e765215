"""Scheduler settings, from MAESTRO_SCHEDULER_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from maestro.core.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAESTRO_SCHEDULER_", frozen=True, extra="ignore")

    database: str = Field(description="sqlite:///PATH")
    worker_address: str = Field(description="host:port of the persona worker pool")
    max_parallel_steps: int = Field(default=8, ge=1, le=256, description="per run")
    heartbeat_timeout_seconds: float = Field(
        default=30.0, gt=0, description="an attempt silent this long is treated as lost"
    )
    context_budget_bytes: int = Field(
        default=256 * 1024, ge=1024, description="dependency files given to one step"
    )

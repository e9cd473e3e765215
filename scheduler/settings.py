"""Scheduler settings, from MAESTRO_SCHEDULER_* environment variables."""

from __future__ import annotations

import os
import socket
import uuid

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from maestro.core.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAESTRO_SCHEDULER_", frozen=True, extra="ignore")

    database: str = Field(
        validation_alias=AliasChoices("MAESTRO_SCHEDULER_DATABASE", "MAESTRO_DATABASE_URL"),
        description="sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
    )
    worker_address: str = Field(
        default="", description="host:port (or dns:///name:port) of the default worker pool"
    )
    worker_pools: str = Field(
        default="",
        description="persona=ADDRESS,...,*=ADDRESS: the worker pool of each persona",
    )
    scheduler_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
        description="this scheduler's name in leases, events and logs (unique per process: "
        "host, pid and a random part, so a restarted scheduler is never taken for the old one)",
    )
    max_parallel_steps: int = Field(default=8, ge=1, le=1000, description="per run")
    max_steps_in_flight: int = Field(
        default=64, ge=1, le=10_000, description="dispatched steps of all runs, this scheduler"
    )
    pool_max_in_flight: int = Field(
        default=0, ge=0, description="dispatched steps per worker pool (0: no limit of its own)"
    )
    max_runs: int = Field(
        default=1000, ge=1, description="runs this scheduler drives at once (claims beyond wait)"
    )
    heartbeat_timeout_seconds: float = Field(
        default=30.0, gt=0, description="an attempt silent this long is treated as lost"
    )
    context_budget_bytes: int = Field(
        default=256 * 1024, ge=1024, description="dependency files given to one step"
    )
    lease_seconds: float = Field(
        default=15.0, gt=0, description="how long a run stays ours without a renewal"
    )
    claim_interval_seconds: float = Field(
        default=2.0, gt=0, description="how often to look for runs without a live owner"
    )
    platform_retry_initial_seconds: float = Field(
        default=0.5, gt=0, description="first wait after an infrastructure fault"
    )
    platform_retry_max_seconds: float = Field(
        default=10.0, gt=0, description="longest wait between retries of an infrastructure fault"
    )
    overload_retry_initial_seconds: float = Field(
        default=20.0, gt=0, description="first wait after the model answered 'overloaded'"
    )
    overload_retry_max_seconds: float = Field(
        default=120.0, gt=0, description="longest wait between retries of an overloaded model"
    )
    run_retention_days: float | None = Field(
        default=None,
        gt=0,
        description="finished runs older than this are deleted (unset: kept until deleted)",
    )
    retention_sweep_seconds: float = Field(
        default=600.0, gt=0, description="how often finished runs are checked for expiry"
    )
    drain_seconds: float = Field(
        default=10.0, ge=0, description="on SIGTERM, how long attempts in flight may finish"
    )

"""Scheduler settings, from MAESTRO_SCHEDULER_* environment variables."""

from __future__ import annotations

import json
import os
import socket
import uuid

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from maestro.core.settings import ServiceSettings
from scheduler.capacity import parse_api_keys, parse_limits


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
    sandbox_address: str = Field(
        default="", description="host:port of the sandbox service, for gate steps"
    )
    rework_feedback_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="a gate's report or a reviewer's findings sent to a reworked step",
    )
    approval_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="how often a waiting approval step looks for a decision made through "
        "another scheduler (its own scheduler's are seen at once)",
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
    dispatch_streams: int = Field(
        default=4,
        ge=0,
        le=64,
        description=(
            "Dispatch streams kept open to each worker pool, which its attempts share "
            "(0: one RunStep call per attempt); at least the pool's worker pods, so each "
            "gets attempts"
        ),
    )
    dispatch_stream_seconds: float = Field(
        default=120.0,
        gt=0,
        description="how long a Dispatch stream takes new attempts before a new one opens",
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
    # -- model capacity (scheduler/limiter.py; README "Model capacity") ------------------
    model_limits: str = Field(
        default="",
        description='JSON: {"MODEL": {"rpm": N, "input_tpm": N, "output_tpm": N}, "*": {...}}; '
        "models not named (and no '*') get Anthropic's Tier 4 limits for Claude Sonnet",
    )
    api_keys: str = Field(
        default="",
        description="POOL=LABEL,...: which API key (a label, never the key) each worker pool "
        "calls with, when pools use different keys; each key has its own account, and "
        "model_limits may name KEY/MODEL (or KEY/*)",
    )
    capacity_minute_seconds: float = Field(
        default=60.0, gt=0, description="the length of a rate limit's minute (shorter in tests)"
    )
    capacity_skew_seconds: float = Field(
        default=5.0,
        ge=0,
        description="PostgreSQL: how long after its lease ends a call admitted from it may "
        "still reach the API (its grant counts that much longer)",
    )
    capacity_lease_seconds: float = Field(
        default=0.0,
        ge=0,
        description="PostgreSQL: how long a batch of capacity leased from the shared table "
        "may be used (0: a thirtieth of the minute)",
    )
    capacity_lease_fraction: float = Field(
        default=0.02,
        ge=0,
        le=0.5,
        description="PostgreSQL: the share of a minute's limit leased beyond the call that "
        "needs it, so the next calls need no database round trip",
    )
    worker_provider: str = Field(
        default="anthropic",
        description="the workers' default provider: limits apply to anthropic calls, and to "
        "runs that name no provider when this is anthropic",
    )
    default_model: str = Field(
        default="claude-sonnet-5-5",
        description="the workers' default model: whose limits a step that names none uses",
    )
    output_estimate_tokens: int = Field(
        default=2048, ge=1, description="output tokens a call is expected to write, until settled"
    )
    prompt_overhead_bytes: int = Field(
        default=8192, ge=0, description="a persona's system prompt and tools, for the estimate"
    )
    breaker_threshold: int = Field(
        default=3, ge=1, description="overloads (529, overloaded_error) that open a model's breaker"
    )
    breaker_window_seconds: float = Field(
        default=60.0, gt=0, description="within how long those overloads must come"
    )
    breaker_cool_down_seconds: float = Field(
        default=30.0, gt=0, description="how long an open breaker waits before one probe call"
    )

    @field_validator("api_keys")
    @classmethod
    def _api_keys_parse(cls, value: str) -> str:
        try:
            parse_api_keys(value)
        except ValueError as err:
            raise ValueError(f"MAESTRO_SCHEDULER_API_KEYS: {err}") from None
        return value

    @field_validator("model_limits")
    @classmethod
    def _limits_parse(cls, value: str) -> str:
        try:
            parse_limits(value)
        except (ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"MAESTRO_SCHEDULER_MODEL_LIMITS: {err}") from None
        return value

"""Sandbox service settings, from MAESTRO_SANDBOX_*."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from maestro.core.settings import ServiceSettings
from maestro.paths import MAX_FILE_BYTES

MIB = 1024 * 1024


class SandboxSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAESTRO_SANDBOX_", frozen=True, extra="ignore")

    isolation: Literal["namespaces", "none"] = Field(
        default="namespaces",
        description="`none` runs generated code without isolation; every result says so",
    )
    max_concurrent_runs: int = Field(default=2, ge=1, le=64)
    heartbeat_interval_seconds: float = Field(default=5.0, gt=0)
    max_run_seconds: float = Field(
        default=900.0, gt=0, description="a run's time when the caller sets no deadline"
    )
    # Limits on each check (one tool run); cpu, memory, open files and file size are
    # per process, processes per run (its own user id).
    wall_seconds: float = Field(default=120.0, gt=0)
    cpu_seconds: int = Field(default=120, ge=1)
    memory_bytes: int = Field(default=1024 * MIB, ge=64 * MIB)
    processes: int = Field(default=128, ge=8)
    open_files: int = Field(default=256, ge=32)
    file_bytes: int = Field(default=64 * MIB, ge=MIB)
    disk_bytes: int = Field(
        default=512 * MIB, ge=16 * MIB, description="the jail's tmpfs: workspace and /tmp"
    )
    output_bytes: int = Field(default=4 * MIB, ge=64 * 1024, description="stdout + stderr")
    report_bytes: int = Field(default=16 * MIB, ge=MIB, description="each tool report read")
    # What a request may carry.
    max_files: int = Field(default=2000, ge=1)
    max_file_bytes: int = Field(default=MAX_FILE_BYTES, ge=1)
    max_total_bytes: int = Field(default=32 * MIB, ge=1)
    # How much of each check's findings the report lists (all are counted).
    max_report_items: int = Field(default=50, ge=1)
    message_chars: int = Field(default=600, ge=80)
    output_tail_chars: int = Field(default=2000, ge=0)
    sandbox_uid: int = Field(
        default=64000,
        ge=1000,
        le=2**31 - 1024,
        description="first of the unprivileged user ids, one per concurrent run",
    )
    scratch_dir: Path | None = Field(
        default=None, description="where scratch directories go; unset = the system's temp"
    )
    ruff_select: str = Field(default="E4,E7,E9,F", pattern=r"^[A-Z]+[0-9]*(,[A-Z]+[0-9]*)*$")

    @model_validator(mode="after")
    def _fits(self) -> SandboxSettings:
        if self.max_total_bytes >= self.disk_bytes:
            raise ValueError("max_total_bytes must be smaller than disk_bytes")
        if self.max_file_bytes > self.max_total_bytes:
            raise ValueError("max_file_bytes must not exceed max_total_bytes")
        return self

"""Settings shared by every service: where to listen and how to log.

Each service subclasses ServiceSettings with its own env prefix (MAESTRO_WORKER_,
MAESTRO_SCHEDULER_, MAESTRO_GATEWAY_). Bad config fails at start with a clear message.

Secrets can also come from files: with MAESTRO_SECRETS_DIR set, a file in that directory
named like a setting's environment variable (`ANTHROPIC_API_KEY`, `MAESTRO_DATABASE_URL`)
is read as that setting, so a Kubernetes Secret can be mounted as a volume instead of
being put in the environment. A variable in the environment wins over a file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Listening address and logging, common to all services."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    port_file: Path | None = Field(
        default=None, description="written with the bound port once the service is serving"
    )
    log_level: str = Field(default="INFO", validation_alias="MAESTRO_LOG_LEVEL")
    log_file: Path | None = Field(
        default=None,
        description="log here (rotated by size) instead of stderr; a local stack sets it",
    )
    log_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        validation_alias="MAESTRO_LOG_MAX_BYTES",
        description="a log file is rotated when it reaches this size",
    )
    log_backups: int = Field(
        default=3,
        ge=0,
        validation_alias="MAESTRO_LOG_BACKUPS",
        description="rotated log files kept (NAME.log.1 ...)",
    )
    log_max_value_chars: int = Field(
        default=2000,
        ge=80,
        validation_alias="MAESTRO_LOG_MAX_VALUE_CHARS",
        description="longer log messages and values are cut, saying how much was left out",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="serve Prometheus metrics over HTTP on this port (0: a free one); "
        "unset: no metrics endpoint",
    )
    metrics_port_file: Path | None = Field(
        default=None, description="written with the metrics endpoint's bound port"
    )
    shutdown_grace_seconds: float = Field(
        default=5.0, gt=0, description="how long calls in flight may finish after SIGTERM"
    )
    readiness_interval_seconds: float = Field(
        default=1.0, gt=0, description="how often readiness (the store, say) is probed"
    )


S = TypeVar("S", bound=BaseSettings)

UMASK_ENV = "MAESTRO_UMASK"


def _apply_umask(raw: str) -> None:
    if not raw.strip():
        return
    try:
        mask = int(raw, 8)
    except ValueError:
        mask = -1
    if not 0 <= mask <= 0o777:
        print(f"invalid configuration: {UMASK_ENV}={raw!r} is not an octal mask", file=sys.stderr)
        raise SystemExit(2)
    os.umask(mask)


SECRETS_DIR_ENV = "MAESTRO_SECRETS_DIR"


def secrets_dir() -> Path | None:
    """The directory of secret files (MAESTRO_SECRETS_DIR), or None when unset.

    Raises:
        SystemExit: it is set but is not a directory (a missing volume, say).
    """
    raw = os.environ.get(SECRETS_DIR_ENV, "")
    if not raw:
        return None
    path = Path(raw)
    if not path.is_dir():
        print(f"{SECRETS_DIR_ENV}={raw} is not a directory", file=sys.stderr)
        raise SystemExit(2)
    return path


def load_settings(cls: type[S]) -> S:
    """Reads settings from the environment (and MAESTRO_SECRETS_DIR's files), or exits
    with every problem listed.

    Called first by every service. With MAESTRO_UMASK set (an octal mask; a local
    stack sets 077 for every service but the sandbox, whose unprivileged jail must
    read its scratch files), it also applies that mask to whatever the service creates.
    """
    _apply_umask(os.environ.get(UMASK_ENV, ""))
    directory = secrets_dir()
    try:
        return cls(_secrets_dir=directory) if directory is not None else cls()
    except ValidationError as err:
        prefix = cls.model_config.get("env_prefix", "")
        lines = [f"invalid configuration for {cls.__name__}:"]
        for problem in err.errors():
            field = ".".join(str(p) for p in problem["loc"])
            lines.append(f"  {prefix}{field.upper()}: {problem['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None

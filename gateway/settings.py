"""Gateway settings, from MAESTRO_GATEWAY_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from maestro.core.settings import ServiceSettings

MIB = 1024 * 1024


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
    tokens_file: Path = Field(
        description="the accepted bearer tokens: lines 'IDENTITY sha256:HEX' (mode 0600)"
    )
    admin_identities: str = Field(
        default="", description="comma-separated identities that see and act on every run"
    )
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate chain")
    tls_key_file: Path | None = Field(default=None, description="PEM private key")
    max_request_bytes: int = Field(
        default=1 * MIB, ge=64 * 1024, le=16 * MIB, description="largest request accepted"
    )
    rate_limit_per_second: float = Field(
        default=200.0, gt=0, description="sustained requests per second per identity"
    )
    rate_limit_burst: int = Field(default=400, ge=1, description="requests at once per identity")
    max_streams_per_client: int = Field(
        default=64, ge=1, description="open event streams per identity"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both TLS_CERT_FILE and TLS_KEY_FILE, or neither")
        return self

    @property
    def admins(self) -> list[str]:
        return [name.strip() for name in self.admin_identities.split(",") if name.strip()]

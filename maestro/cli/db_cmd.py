"""`maestro db wait`, and where `maestro db` finds its database.

A PostgreSQL database is upgraded on purpose, once per release (on Kubernetes, the
migration Job runs `maestro db upgrade`); services check the revision at start and
refuse a database they do not match. `maestro db wait` is for an init container: it
returns once the database answers at this Maestro's revision, so a service started
together with the migration waits for it instead of crash-looping.

The URL is `--database-url`, else MAESTRO_DATABASE_URL (from the environment, or from a
file of that name in MAESTRO_SECRETS_DIR: a mounted Secret).
"""

from __future__ import annotations

import asyncio
import sys
import time

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from maestro.core.settings import load_settings
from maestro.store import SchemaMismatch, StoreUnavailable, open_store, redact_url
from maestro.store.schema_revision import SCHEMA_REVISION

WAIT_INTERVAL_SECONDS = 2.0


class DatabaseSettings(BaseSettings):
    """What `maestro db` and `maestro up` read when --database-url is not given."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    database_url: str | None = Field(default=None, validation_alias="MAESTRO_DATABASE_URL")


def configured_database_url() -> str | None:
    """MAESTRO_DATABASE_URL from the environment, else from its file in the secrets
    directory (a mounted Secret), else None."""
    return load_settings(DatabaseSettings).database_url


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def wait_command(url: str, *, timeout: float) -> int:
    """Waits until the database is reachable and at this Maestro's revision.

    Returns:
        0 once it is, 1 when `timeout` seconds passed first (with the last reason).
    """
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            store = await open_store(url)
        except (SchemaMismatch, StoreUnavailable) as err:
            if err.message != last:
                _note(f"waiting for {redact_url(url)}: {err.message}")
                last = err.message
        else:
            await store.close()
            _note(f"{redact_url(url)} is at schema revision {SCHEMA_REVISION}")
            return 0
        if time.monotonic() + WAIT_INTERVAL_SECONDS > deadline:
            _note(f"gave up after {timeout:g}s: {last}")
            return 1
        await asyncio.sleep(WAIT_INTERVAL_SECONDS)

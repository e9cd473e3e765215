"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from maestro.store import Store, open_store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A writing store on the test's backend (SQLite, then PostgreSQL)."""
    store = await open_store(database_url, writer=True)
    yield store
    await store.close()

"""Fixtures every tier shares: real databases of both kinds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import BACKENDS, Templates, migrated_database


@pytest.fixture(scope="session")
def database_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    templates = Templates(tmp_path_factory.mktemp("templates"))
    yield templates
    templates.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once on SQLite and once on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def database_url(database_templates: Templates, backend: str, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the test's backend."""
    yield from migrated_database(database_templates, backend, tmp_path)

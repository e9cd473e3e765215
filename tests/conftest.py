"""Fixtures every tier shares: real databases of both kinds."""

from __future__ import annotations

import os

# Before anything imports grpc. Some tests fork this process (pexpect's pty fork, to
# run the CLI on a terminal) while other tests' gRPC channels are alive here. With fork
# support on (gRPC's core default), the child restarts gRPC's poller thread, which then
# finds its epoll descriptor closed before exec and crashes the child: 51 of 300 forks
# in a reproduction, 0 with it off (grpc/grpc#43055, grpcio 1.80 to 1.85 at least).
# Maestro's own processes start children with vfork (no fork handlers run).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

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

"""Real databases for tests: a SQLite file, or a PostgreSQL database of this test's own.

PostgreSQL is the server on 127.0.0.1:5432 (MAESTRO_TEST_POSTGRES overrides the admin
URL). Tests that need it never skip: a machine without it fails them. Each test run
migrates one template database and clones it per test (CREATE DATABASE ... TEMPLATE),
and drops every database it made.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg

from maestro.store.migrate import upgrade

ADMIN_URL = os.environ.get("MAESTRO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgres")
_counter = itertools.count()


def postgres_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.encode())


def create_postgres(template: str | None = None) -> str:
    """Creates a new database (a clone of `template`, else empty); returns its name."""
    name = f"maestro_test_{os.getpid()}_{next(_counter)}"
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return name


def drop_postgres(name: str) -> None:
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Templates:
    """Migrated databases made once per test run, cloned for each test."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._sqlite: Path | None = None
        self._postgres: str | None = None

    def sqlite(self, target: Path) -> str:
        if self._sqlite is None:
            self._sqlite = self._root / "template.db"
            upgrade(f"sqlite:///{self._sqlite}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._sqlite, target)
        return f"sqlite:///{target}"

    def postgres(self) -> str:
        if self._postgres is None:
            name = create_postgres()
            upgrade(postgres_url(name))
            self._postgres = name
        return create_postgres(template=self._postgres)

    def close(self) -> None:
        if self._postgres is not None:
            drop_postgres(self._postgres)


def migrated_database(templates: Templates, backend: str, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of `backend` for one test (dropped afterwards)."""
    if backend == "sqlite":
        yield templates.sqlite(tmp_path / "db" / "maestro.db")
        return
    name = templates.postgres()
    try:
        yield postgres_url(name)
    finally:
        drop_postgres(name)

"""Migrations create exactly the schema the code defines, on both databases, and a
service refuses a database at another revision with the command that fixes it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from maestro.store import SchemaMismatch, open_store
from maestro.store.migrate import head_revision, sqlalchemy_url, upgrade
from maestro.store.schema import SCHEMA_REVISION, metadata
from tests.support.databases import create_postgres, drop_postgres, postgres_url


def test_the_code_reads_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_REVISION


def test_a_migrated_database_matches_the_schema_exactly(database_url: str) -> None:
    engine = sqlalchemy.create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert differences == []


async def test_an_empty_database_is_refused_with_the_upgrade_command(
    backend: str, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url, name = f"sqlite:///{tmp_path / 'empty.db'}", None
    else:
        name = create_postgres()
        url = postgres_url(name)
    try:
        with pytest.raises(SchemaMismatch, match="maestro db upgrade --database-url"):
            await open_store(url)
        upgrade(url)
        store = await open_store(url)  # and accepted once upgraded
        await store.close()
    finally:
        if name:
            drop_postgres(name)


async def test_a_database_from_a_newer_maestro_is_refused(database_url: str) -> None:
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
        conn.commit()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as pg:
            pg.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaMismatch, match="newer Maestro"):
        await open_store(database_url)


async def test_a_database_from_before_migrations_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaMismatch, match="before migrations existed"):
        await open_store(f"sqlite:///{path}")


async def test_runs_recorded_before_0004_keep_their_workflow(backend: str, tmp_path: Path) -> None:
    # 0004 moves each run's workflow out of its `runs` row (into run_specs).
    if backend == "sqlite":
        url, name = f"sqlite:///{tmp_path / 'old.db'}", None
    else:
        name = create_postgres()
        url = postgres_url(name)
    spec = '{"name": "kept", "steps": [{"id": "a", "persona": "requirements_analyst"}]}'
    try:
        upgrade(url, "0003")
        engine = sqlalchemy.create_engine(sqlalchemy_url(url))
        try:
            with engine.begin() as connection:
                connection.execute(
                    sqlalchemy.text(
                        "INSERT INTO runs (run_id, workflow_name, spec_json, requirement,"
                        " provider, request_id, state, create_time)"
                        " VALUES ('r1', 'kept', :spec, 'req', '', '', 'SUCCEEDED', 1)"
                    ),
                    {"spec": spec},
                )
        finally:
            engine.dispose()
        upgrade(url)
        store = await open_store(url)
        try:
            run = await store.get_run("r1")
        finally:
            await store.close()
    finally:
        if name:
            drop_postgres(name)
    assert run is not None
    assert run.spec_json == spec

"""Alembic's environment: the URL comes from maestro.store.migrate, the target from schema.py."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from maestro.store.schema import metadata


def run_migrations() -> None:
    config = context.config
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            # SQLite cannot ALTER most things: Alembic rebuilds the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()

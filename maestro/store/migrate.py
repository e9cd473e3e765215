"""Schema migrations (Alembic): `maestro db upgrade` and the local stack call `upgrade`.

Only the upgrade command (and a local stack, for its own SQLite file) changes a schema;
services check the revision at start and refuse a database they do not match.
"""

from __future__ import annotations

from pathlib import Path

from maestro.core.errors import InvalidArgument
from maestro.store.base import redact_url
from maestro.store.errors import SchemaMismatch, StoreUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL (with its driver) for a Maestro database URL."""
    if url.startswith("sqlite:///"):
        return url
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise InvalidArgument("database_url", "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


def _config(url: str) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's ini interpolation treats '%' specially (URL-encoded passwords).
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Brings the database to `revision` (creating a SQLite file if needed). Blocking.

    Raises:
        StoreUnavailable: the database cannot be reached.
        SchemaMismatch: it holds tables this Maestro did not make, or a newer schema.
    """
    from alembic import command
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError, OperationalError

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        command.upgrade(_config(url), revision)  # type: ignore[arg-type]
    except OperationalError as err:
        first = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise StoreUnavailable(f"cannot upgrade {redact_url(url)}: {first}") from None
    except CommandError as err:
        # e.g. "Can't locate revision": the database was upgraded by a newer Maestro.
        raise SchemaMismatch(f"cannot upgrade {redact_url(url)}: {err}") from None
    except DBAPIError as err:
        first = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise SchemaMismatch(
            f"cannot upgrade {redact_url(url)}: {first} (is it a Maestro database?)"
        ) from None


def head_revision() -> str:
    """The newest revision among the migrations."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return head

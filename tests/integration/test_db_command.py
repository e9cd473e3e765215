"""`maestro db upgrade` and `maestro db wait` on a real database file."""

from __future__ import annotations

from pathlib import Path

import pytest

from maestro.cli.main import main
from maestro.store.schema_revision import SCHEMA_REVISION


def test_wait_gives_up_until_upgrade_brings_the_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'maestro.db'}"
    (tmp_path / "maestro.db").touch()  # reachable, but no schema yet

    assert main(["db", "wait", "--database-url", url, "--timeout", "0.1"]) == 1
    assert "has no Maestro schema" in capsys.readouterr().err

    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert f"is at schema {SCHEMA_REVISION}" in capsys.readouterr().out

    assert main(["db", "wait", "--database-url", url, "--timeout", "5"]) == 0
    assert f"is at schema revision {SCHEMA_REVISION}" in capsys.readouterr().err
    # Upgrading again changes nothing and succeeds (the Job may run twice).
    assert main(["db", "upgrade", "--database-url", url]) == 0


def test_db_without_a_command_prints_its_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db"]) == 2
    usage = capsys.readouterr().err
    assert "upgrade" in usage and "wait" in usage

"""Secret settings from files (MAESTRO_SECRETS_DIR), as a mounted Kubernetes Secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from maestro.cli.db_cmd import configured_database_url
from maestro.core.settings import load_settings
from persona_service.settings import WorkerSettings


def _mounted_secret(directory: Path, files: dict[str, str]) -> Path:
    """The kubelet's layout: ..TIMESTAMP/KEY, ..data -> ..TIMESTAMP, KEY -> ..data/KEY."""
    stamp = directory / "..2026_01_01"
    stamp.mkdir(parents=True)
    for key, value in files.items():
        (stamp / key).write_text(value + "\n")
        (directory / key).symlink_to(f"..data/{key}")
    (directory / "..data").symlink_to(stamp.name)
    return directory


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "MAESTRO_DATABASE_URL", "MAESTRO_SECRETS_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_a_setting_is_read_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = _mounted_secret(tmp_path / "secrets", {"ANTHROPIC_API_KEY": "sk-from-file"})
    monkeypatch.setenv("MAESTRO_SECRETS_DIR", str(secrets))
    settings = load_settings(WorkerSettings)
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.get_secret_value() == "sk-from-file"  # no newline
    assert settings.default_provider == "anthropic"


def test_the_environment_wins_over_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = _mounted_secret(tmp_path / "s", {"MAESTRO_DATABASE_URL": "postgresql://file/db"})
    monkeypatch.setenv("MAESTRO_SECRETS_DIR", str(secrets))
    assert configured_database_url() == "postgresql://file/db"
    monkeypatch.setenv("MAESTRO_DATABASE_URL", "postgresql://env/db")
    assert configured_database_url() == "postgresql://env/db"


def test_a_secrets_dir_that_is_not_a_directory_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAESTRO_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(SystemExit) as stopped:
        load_settings(WorkerSettings)
    assert stopped.value.code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_no_database_url_anywhere_leaves_the_choice_to_the_command() -> None:
    assert configured_database_url() is None

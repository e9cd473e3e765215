"""Downloads: new or empty directories, staged files, adding without replacing."""

from __future__ import annotations

from pathlib import Path

import pytest

from maestro.cli.download import (
    DownloadError,
    Mode,
    UnusableOutput,
    _finish,
    _make_staging,
    check_output,
    check_paths,
    prepare_output,
    write_new_file,
)
from maestro.cli.main import main


def _stage(out: Path, files: dict[str, bytes]) -> Path:
    prepare_output(out, Mode.NEW if not out.exists() else Mode.ADD)
    staging = _make_staging(out)
    for path, content in files.items():
        write_new_file(staging, path, content)
    return staging


def test_a_new_directory_appears_whole(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    staging = _stage(out, {"a/b.txt": b"b", ".bashrc": b"fine here"})
    assert not out.exists()  # nothing visible until complete
    assert _finish(staging, out, ["a/b.txt", ".bashrc"], Mode.NEW) == []
    assert (out / "a" / "b.txt").read_bytes() == b"b"
    assert not staging.exists()


def test_a_non_empty_directory_is_refused_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / "x").write_text("mine")
    with pytest.raises(UnusableOutput, match="--force"):
        check_output(out, Mode.NEW)
    check_output(out, Mode.ADD)
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(UnusableOutput, match="symbolic link"):
        check_output(link, Mode.ADD)


def test_force_adds_and_keeps_what_is_there_even_through_symlinks(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    outside = tmp_path / "outside"
    (out / "docs").mkdir(parents=True)
    outside.mkdir()
    (out / ".bashrc").write_text("# mine\n")
    (out / "lib").symlink_to(outside, target_is_directory=True)
    (out / "file").write_text("a file where a directory is wanted")
    staging = _stage(
        out,
        {
            ".bashrc": b"evil",
            "docs/new.md": b"new",
            "lib/x.py": b"through the link",
            "file/y": b"under a file",
        },
    )
    kept = _finish(staging, out, [".bashrc", "docs/new.md", "lib/x.py", "file/y"], Mode.ADD)
    assert sorted(kept) == [".bashrc", "file/y", "lib/x.py"]
    assert (out / ".bashrc").read_text() == "# mine\n"
    assert (out / "docs" / "new.md").read_bytes() == b"new"
    assert list(outside.iterdir()) == []
    assert not staging.exists()


def test_overwrite_replaces_files_but_never_follows_links(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    outside = tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "a.md").write_text("old")
    (out / "lib").symlink_to(outside, target_is_directory=True)
    staging = _stage(out, {"a.md": b"new", "lib/x.py": b"x"})
    kept = _finish(staging, out, ["a.md", "lib/x.py"], Mode.OVERWRITE)
    assert kept == ["lib/x.py"]
    assert (out / "a.md").read_text() == "new"
    assert list(outside.iterdir()) == []


def test_collisions_and_case_twins_are_refused_up_front() -> None:
    with pytest.raises(DownloadError, match="is a file, but 'a/b' needs a directory"):
        check_paths(["a", "a/b"])
    with pytest.raises(DownloadError, match="case-insensitive"):
        check_paths(["README.md", "readme.md"])
    assert check_paths(["./docs/a.md", "docs/b.md"]) == ["docs/a.md", "docs/b.md"]


def test_maestro_run_refuses_a_non_empty_out_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAESTRO_GATEWAY", raising=False)
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["run", "sdlc-linear", "-r", "x", "--out", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert not (tmp_path / ".maestro").exists()

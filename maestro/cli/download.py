"""Downloading a run's artifacts into a local directory, so that it cannot hurt the user.

The paths started life as model output. Before anything touches the disk, every path
is checked (`maestro.paths`: no absolute paths, `..`, `.git*` components, device
names, control or bidi characters) and the set is checked for collisions (a file
`a` and a file `a/b`; two names that differ only in case).

The output directory must be new or empty: the files are written into a private
staging directory beside it, each created exclusively (O_EXCL, never through a
symlink), and the staging directory becomes the output directory once everything has
been written and its checksum verified. A download that fails leaves nothing behind.

An existing non-empty directory is used only when asked: `add` (`--force`) adds the
new files and keeps every existing one (each skip is reported); `overwrite`
(`--overwrite`) replaces existing files. Either way the files are staged first, and
no directory in the output tree is followed through a symlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from maestro.cli.gateway_client import GatewayClient
from maestro.core.errors import MaestroError
from maestro.paths import BadPath, normalize_artifact_path

_STAGING_PREFIX = ".maestro-download-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class Mode(StrEnum):
    """What may happen to an existing output directory."""

    NEW = "new"
    """It must not exist, or be empty (the default)."""
    ADD = "add"
    """Files are added; existing files are kept and reported (`--force`)."""
    OVERWRITE = "overwrite"
    """Files are added; existing files are replaced (`--overwrite`)."""


@dataclass(frozen=True)
class SavedArtifact:
    """One artifact written to disk."""

    path: Path
    artifact_path: str
    step_id: str
    size_bytes: int


@dataclass
class DownloadResult:
    """What a download wrote, and what it kept instead of overwriting."""

    saved: list[SavedArtifact] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Artifact paths not written because a file (or directory) was already there."""


class DownloadError(MaestroError):
    """The artifacts cannot be saved: an unsafe path, a collision, a non-empty output
    directory, or content that fails its checksum. Nothing was written."""


class UnusableOutput(DownloadError):
    """The output directory given cannot receive the download (a usage error)."""


def check_content(artifact_path: str, content: bytes, sha256: str) -> None:
    """Raises DownloadError when the content does not match the recorded checksum."""
    if sha256 and hashlib.sha256(content).hexdigest() != sha256.lower():
        raise DownloadError(f"artifact {artifact_path!r} does not match its sha256 {sha256}")


def check_paths(paths: list[str]) -> list[str]:
    """The normalised paths, if every one is safe and no two collide.

    Raises:
        DownloadError: naming every unsafe path and every collision.
    """
    problems: list[str] = []
    clean: list[str] = []
    for raw in paths:
        try:
            path = normalize_artifact_path(raw)
        except BadPath as err:
            problems.append(str(err))
            continue
        clean.append(path)
    files: dict[str, str] = {}
    for path in clean:
        folded = path.casefold()
        if folded in files:
            problems.append(
                f"{path!r} and {files[folded]!r} would be the same file on a case-insensitive disk"
            )
        files[folded] = path
    directories = {
        "/".join(path.casefold().split("/")[:i]): path
        for path in clean
        for i in range(1, path.count("/") + 1)
    }
    for folded, path in files.items():
        if folded in directories:
            problems.append(
                f"{path!r} is a file, but {directories[folded]!r} needs a directory there"
            )
    if problems:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise DownloadError(f"refusing to download: {shown}")
    return clean


def check_output(out_dir: Path, mode: Mode) -> None:
    """Checks, without creating anything, that `out_dir` may receive a download.

    `maestro run` calls it before the run starts, so a run is not spent for nothing.

    Raises:
        UnusableOutput: as `prepare_output`.
    """
    try:
        info = out_dir.lstat()
    except FileNotFoundError:
        return
    _check_existing(out_dir, info, mode)


def _check_existing(out_dir: Path, info: os.stat_result, mode: Mode) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise UnusableOutput(f"{out_dir} is a symbolic link; give a real directory")
    if not stat.S_ISDIR(info.st_mode):
        raise UnusableOutput(f"{out_dir} exists and is not a directory")
    if mode is Mode.NEW and any(out_dir.iterdir()):
        raise UnusableOutput(
            f"{out_dir} is not empty; artifacts go into a new or empty directory. Pass "
            "--force to add them to it (existing files are kept), or --overwrite to "
            "replace existing files"
        )


def prepare_output(out_dir: Path, mode: Mode) -> None:
    """Checks that `out_dir` may receive the download; creates its parents.

    Blocking file I/O: async code calls it in a thread.

    Raises:
        UnusableOutput: it is a symlink or a file, or it is not empty while `mode` is NEW.
    """
    try:
        info = out_dir.lstat()
    except FileNotFoundError:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return
    _check_existing(out_dir, info, mode)


def _open_dir(parent: int, name: str, *, create: bool) -> int:
    """Opens (creating if asked) a directory under `parent`, never through a symlink."""
    if create:
        with contextlib.suppress(FileExistsError):  # then opening it checks what it is
            os.mkdir(name, 0o777, dir_fd=parent)
    return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _parent_fd(root: int, path: str, *, create: bool) -> tuple[int, str]:
    """A descriptor of the directory holding `path` under `root`, and the file's name.

    Raises:
        OSError: a component is a file or a symlink (ENOTDIR, ELOOP), or is missing.
    """
    *dirs, name = path.split("/")
    fd = os.dup(root)
    try:
        for part in dirs:
            child = _open_dir(fd, part, create=create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def write_new_file(root: Path, path: str, content: bytes) -> None:
    """Creates `root/path` with `content`; never replaces or follows anything.

    Blocking file I/O: async code calls it in a thread.

    Raises:
        FileExistsError: something is already there.
        OSError: a directory on the way is a file or a symlink, or the disk failed.
    """
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        parent, name = _parent_fd(root_fd, path, create=True)
    finally:
        os.close(root_fd)
    try:
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=parent
        )
        with os.fdopen(fd, "wb") as file:
            file.write(content)
    finally:
        os.close(parent)


def _merge(staging: Path, out_dir: Path, paths: list[str], mode: Mode) -> list[str]:
    """Moves staged files into an existing directory; returns the paths kept as they were."""
    kept: list[str] = []
    out_fd = os.open(out_dir, _DIR_FLAGS)
    staged_fd = os.open(staging, _DIR_FLAGS)
    try:
        for path in paths:
            src_parent, name = _parent_fd(staged_fd, path, create=False)
            try:
                try:
                    dst_parent, _ = _parent_fd(out_fd, path, create=True)
                except OSError:
                    kept.append(path)  # a file (or a symlink) where a directory goes
                    continue
                try:
                    if mode is Mode.OVERWRITE and not _is_dir(dst_parent, name):
                        os.replace(name, name, src_dir_fd=src_parent, dst_dir_fd=dst_parent)
                    else:
                        # A hard link never replaces: FileExistsError if anything is there.
                        os.link(name, name, src_dir_fd=src_parent, dst_dir_fd=dst_parent)
                except FileExistsError:
                    kept.append(path)
                except OSError:
                    # No hard links here (another disk): copy with the same guarantees.
                    if _exists(dst_parent, name):
                        kept.append(path)
                    else:
                        _copy(src_parent, dst_parent, name)
                finally:
                    os.close(dst_parent)
            finally:
                os.close(src_parent)
    finally:
        os.close(out_fd)
        os.close(staged_fd)
    return kept


def _is_dir(parent: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _exists(parent: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _copy(src_parent: int, dst_parent: int, name: str) -> None:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_parent)
    with os.fdopen(src, "rb") as source:
        content = source.read()
    fd = os.open(
        name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=dst_parent
    )
    with os.fdopen(fd, "wb") as file:
        file.write(content)


def _umask() -> int:
    # Read, not set: setting it to read it would race with other threads.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _make_staging(out_dir: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out_dir.parent))
    # mkdtemp makes it 0700; the finished directory gets the user's usual mode.
    staging.chmod(0o777 & ~_umask())
    return staging


def _finish(staging: Path, out_dir: Path, paths: list[str], mode: Mode) -> list[str]:
    """Puts the staged files in place; returns the paths kept as they were."""
    try:
        if not out_dir.exists():
            os.rename(staging, out_dir)  # atomic: all the files appear at once
            return []
        if mode is Mode.NEW:
            # Empty (checked before): rename onto an empty directory replaces it, and
            # fails if something was put there meanwhile.
            try:
                os.rename(staging, out_dir)
            except OSError as err:
                raise DownloadError(f"{out_dir} changed during the download: {err}") from None
            return []
        return _merge(staging, out_dir, paths, mode)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


async def download_artifacts(
    client: GatewayClient, run: str, out_dir: Path, *, mode: Mode = Mode.NEW
) -> DownloadResult:
    """Fetches every artifact of a run and puts it under `out_dir`.

    Returns:
        The files written, in the gateway's order, and the paths kept as they were.

    Raises:
        DownloadError: an unsafe path, colliding paths, an output directory that is
            not new or empty (in NEW mode), or a checksum mismatch; nothing written.
        MaestroError: the gateway failed; nothing written.
        OSError: the disk failed; nothing written (in NEW mode).
    """
    listed = await client.list_artifacts(run)
    paths = check_paths([a.path for a in listed])
    await asyncio.to_thread(prepare_output, out_dir, mode)
    staging = await asyncio.to_thread(_make_staging, out_dir)
    result = DownloadResult()
    try:
        for artifact, path in zip(listed, paths, strict=True):
            full = await client.get_artifact(artifact.name)
            check_content(path, full.content, full.sha256 or artifact.sha256)
            try:
                await asyncio.to_thread(write_new_file, staging, path, full.content)
            except OSError as err:
                raise DownloadError(f"cannot stage {path!r}: {err.strerror or err}") from None
            result.saved.append(
                SavedArtifact(out_dir / path, path, artifact.step_id, len(full.content))
            )
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, staging, True)
        raise
    result.kept = await asyncio.to_thread(_finish, staging, out_dir, paths, mode)
    kept = set(result.kept)
    result.saved = [s for s in result.saved if s.artifact_path not in kept]
    return result

"""Downloading a run's artifacts into a local directory, safely.

The gateway already rejects bad artifact paths, but the paths started life as model
output, so they are checked again here before anything touches the disk: no absolute
paths, no `..`, and nothing that resolves outside the output directory (a symlink
planted there earlier cannot redirect a write).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from maestro.cli.gateway_client import GatewayClient
from maestro.core.errors import MaestroError
from maestro.paths import BadPath, normalize_artifact_path


@dataclass(frozen=True)
class SavedArtifact:
    """One artifact written to disk."""

    path: Path
    artifact_path: str
    step_id: str
    size_bytes: int


class DownloadError(MaestroError):
    """An artifact could not be saved: unsafe path or content that fails its checksum."""


def safe_output_path(out_dir: Path, artifact_path: str) -> Path:
    """Where an artifact goes under `out_dir`, or an error when it would escape.

    Touches the filesystem (resolves symlinks), so async code calls it in a thread.

    Raises:
        BadPath: the path is absolute, climbs out with `..`, is otherwise malformed,
            or resolves outside `out_dir`.
    """
    relative = normalize_artifact_path(artifact_path)
    root = out_dir.resolve()
    target = (root / relative).resolve()
    if target == root or not target.is_relative_to(root):
        raise BadPath(f"path {artifact_path!r} resolves outside {out_dir}")
    return target


def write_artifact(out_dir: Path, artifact_path: str, content: bytes) -> Path:
    """Writes one file under `out_dir` atomically and returns where it went.

    Blocking file I/O: async code calls it in a thread.

    Raises:
        BadPath: see `safe_output_path`.
        OSError: the file could not be written.
    """
    target = safe_output_path(out_dir, artifact_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so an interrupted download never leaves a truncated file
    # that looks complete.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        tmp.write_bytes(content)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def check_content(artifact_path: str, content: bytes, sha256: str) -> None:
    """Raises DownloadError when the content does not match the recorded checksum."""
    if sha256 and hashlib.sha256(content).hexdigest() != sha256.lower():
        raise DownloadError(f"artifact {artifact_path!r} does not match its sha256 {sha256}")


async def download_artifacts(client: GatewayClient, run: str, out_dir: Path) -> list[SavedArtifact]:
    """Fetches every artifact of a run and writes it under `out_dir`.

    Every path is checked before any content is fetched, so a bad path fails the
    download before a single file is written.

    Returns:
        The files written, in the gateway's order.

    Raises:
        BadPath: an artifact path is unsafe.
        DownloadError: content does not match its checksum.
        MaestroError: the gateway failed.
        OSError: a file could not be written.
    """
    listed = await client.list_artifacts(run)
    for artifact in listed:
        await asyncio.to_thread(safe_output_path, out_dir, artifact.path)
    saved: list[SavedArtifact] = []
    for artifact in listed:
        full = await client.get_artifact(artifact.name)
        check_content(artifact.path, full.content, full.sha256 or artifact.sha256)
        path = await asyncio.to_thread(write_artifact, out_dir, artifact.path, full.content)
        saved.append(SavedArtifact(path, artifact.path, artifact.step_id, len(full.content)))
    return saved

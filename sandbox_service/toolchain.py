"""What the jail shows of this machine: the interpreter, the toolchain and little else.

The toolchain is pytest, pytest-cov and ruff with what they require, taken from this
service's own environment (Maestro's dependencies install them). Inside the jail the
environment's site-packages is empty except for those distributions, so generated code
can import the standard library, the toolchain and its own modules, and nothing else.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

TOOLCHAIN_ROOTS = ("pytest", "pytest-cov", "ruff")
DEVICE_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# Host files the dynamic linker and the C library read; nothing secret.
HOST_FILES = ("/etc/ld.so.cache", "/etc/localtime")
_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class ToolchainError(RuntimeError):
    """The toolchain is not installed as expected; the message says what is missing."""


@dataclass(frozen=True)
class HostView:
    """The parts of the host the jail binds read-only, and the tools' paths."""

    python: str
    ruff: str
    read_only_binds: tuple[str, ...]
    symlinks: dict[str, str]
    hidden_dirs: tuple[str, ...]
    revealed: tuple[str, ...]
    device_files: tuple[str, ...]
    host_files: tuple[str, ...]


def _closure(roots: tuple[str, ...]) -> list[metadata.Distribution]:
    """The distributions `roots` need on this interpreter, roots included."""
    seen: dict[str, metadata.Distribution] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ToolchainError(f"{name} is not installed; reinstall Maestro") from None
        seen[key] = dist
        for raw in dist.requires or ():
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return [seen[k] for k in sorted(seen)]


def _site_dirs() -> list[str]:
    dirs = {*site.getsitepackages()}
    dirs |= {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    return sorted(os.path.realpath(d) for d in dirs if d and os.path.isdir(d))


def _entries(dists: list[metadata.Distribution], site_dirs: list[str]) -> list[str]:
    """Top-level entries of site-packages (packages, modules, dist-info, .pth files)."""
    entries: set[str] = set()
    for dist in dists:
        for file in dist.files or ():
            located = os.path.realpath(str(file.locate()))
            for directory in site_dirs:
                if located.startswith(directory + os.sep):
                    first = located[len(directory) + 1 :].split(os.sep)[0]
                    if first != "__pycache__":
                        entries.add(os.path.join(directory, first))
    return sorted(e for e in entries if os.path.exists(e))


def _covering(paths: set[str]) -> list[str]:
    """The paths, without those inside another one of them."""
    ordered = sorted(paths)
    kept: list[str] = []
    for path in ordered:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def host_view() -> HostView:
    """Works out what the jail needs from this machine.

    Raises:
        ToolchainError: a toolchain distribution or the ruff binary is missing.
    """
    python = sys.executable
    ruff = str(Path(sysconfig.get_path("scripts")) / "ruff")
    if not os.access(ruff, os.X_OK):
        raise ToolchainError(f"the ruff binary is not at {ruff}; reinstall Maestro")
    symlinks: dict[str, str] = {}
    binds = {"/usr"}
    for name in _TOP_LEVEL:
        path = f"/{name}"
        if os.path.islink(path):
            symlinks[path] = os.readlink(path)
        elif os.path.isdir(path):
            binds.add(path)
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    prefixes.add(os.path.dirname(os.path.dirname(os.path.realpath(python))))
    for prefix in prefixes:
        real = os.path.realpath(prefix)
        if real == "/":
            raise ToolchainError("Python's prefix is /; the jail cannot bind it selectively")
        binds.add(real)
        if real != prefix:
            binds.add(prefix)
    site_dirs = _site_dirs()
    return HostView(
        python=python,
        ruff=ruff,
        read_only_binds=tuple(_covering(binds)),
        symlinks=symlinks,
        hidden_dirs=tuple(site_dirs),
        revealed=tuple(_entries(_closure(TOOLCHAIN_ROOTS), site_dirs)),
        device_files=tuple(d for d in DEVICE_FILES if os.path.exists(d)),
        host_files=tuple(f for f in HOST_FILES if os.path.isfile(f)),
    )

"""Runs one tool in a jail (namespaces) or plainly (none), from the service's side.

Each tool run is its own init process (sandbox_service/jail.py), started through
`setpriv --pdeathsig KILL` (it dies with this service) and, in namespaces mode,
`unshare` (fresh mount, network, PID, IPC and UTS namespaces; init is PID 1, and when it
dies the kernel kills everything left in the namespace). The service waits with its
own deadline and kills init if it overstays; everything init leaves is in the run's
output directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maestro.core.errors import Unavailable
from maestro.sandbox.models import Isolation
from sandbox_service.jail_spec import (
    NAMESPACES,
    RESULT_FILE,
    SANDBOX_DIR,
    STDERR_FILE,
    STDOUT_FILE,
    Limits,
    Spec,
)
from sandbox_service.toolchain import HostView

log = logging.getLogger(__name__)

# Time init gets beyond the tool's wall time: building the jail, reading reports.
_INIT_GRACE_SECONDS = 15.0
_INIT_STDERR_BYTES = 64 * 1024
_JAIL_PATH = "/usr/local/bin:/usr/bin:/bin"


class JailBroken(Unavailable):
    """The jail could not be built or init failed; no result of the tool exists."""


@dataclass(frozen=True)
class JailResult:
    """What init reported about one tool run."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    output_exceeded: bool
    exec_error: str | None
    cpu_seconds: float
    wall_seconds: float
    stdout: bytes
    stderr: bytes
    reports: dict[str, bytes] = field(default_factory=dict)
    report_problems: dict[str, str] = field(default_factory=dict)
    overstayed: bool = False


@dataclass(frozen=True)
class Paths:
    """Where the tool's files are, as the tool sees them."""

    root: str
    sandbox: str
    workspace: str
    reports: str


def _passwd(uid: int, gid: int) -> dict[str, str]:
    return {
        "/etc/passwd": (
            "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
            f"sandbox:x:{uid}:{gid}:sandbox:/tmp:/usr/sbin/nologin\n"
        ),
        "/etc/group": f"root:x:0:\nsandbox:x:{gid}:\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
        "/etc/resolv.conf": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        "/etc/hostname": "sandbox\n",
    }


class Jail:
    """Starts tool runs with one isolation and one set of limits."""

    def __init__(self, isolation: Isolation, view: HostView, limits: Limits) -> None:
        self.isolation = isolation
        self.view = view
        self.limits = limits
        self._setpriv = shutil.which("setpriv")
        self._unshare = shutil.which("unshare")

    def missing_tools(self) -> str:
        """Empty when the commands the jail needs exist; otherwise what is missing."""
        if self.isolation is Isolation.NONE:
            return ""
        missing = [n for n, p in (("setpriv", self._setpriv), ("unshare", self._unshare)) if not p]
        if missing:
            return f"{' and '.join(missing)} not found (util-linux)"
        return ""

    def paths(self, run_dir: Path, name: str) -> Paths:
        """The view of tool run `name`: `/sandbox/...` in a jail, a directory otherwise."""
        root = "/" if self.isolation is Isolation.NAMESPACES else str(_root_dir(run_dir, name))
        sandbox = os.path.join(root, SANDBOX_DIR)
        return Paths(
            root=root,
            sandbox=sandbox,
            workspace=os.path.join(sandbox, "workspace"),
            reports=os.path.join(sandbox, "reports"),
        )

    def env(self, paths: Paths) -> dict[str, str]:
        """The tool's whole environment: nothing of the service's."""
        return {
            "PATH": f"{Path(self.view.python).parent}:{_JAIL_PATH}",
            "HOME": os.path.join(paths.root, "tmp"),
            "TMPDIR": os.path.join(paths.root, "tmp"),
            "LANG": "C.UTF-8",
            "PYTHONNOUSERSITE": "1",
            # Threads would otherwise each reserve a 64 MiB malloc arena of address space.
            "MALLOC_ARENA_MAX": "2",
            # Coverage data beside the reports, which have room of their own.
            "COVERAGE_FILE": os.path.join(paths.reports, ".coverage"),
        }

    def _spec(
        self,
        run_dir: Path,
        name: str,
        output_dir: Path,
        argv: list[str],
        uid: int,
        files: dict[str, str],
        reports: dict[str, str],
    ) -> Spec:
        common: dict[str, Any] = {
            "input_dir": str(run_dir / "in"),
            "root_dir": str(_root_dir(run_dir, name)),
            "output_dir": str(output_dir),
            "argv": argv,
            "env": self.env(self.paths(run_dir, name)),
            "limits": self.limits,
            "reports": reports,
        }
        if self.isolation is Isolation.NONE:
            return Spec(mode="none", uid=os.getuid(), gid=os.getgid(), files=files, **common)
        view = self.view
        return Spec(
            mode=NAMESPACES,
            uid=uid,
            gid=uid,
            read_only_binds=list(view.read_only_binds),
            symlinks=dict(view.symlinks),
            hidden_dirs=list(view.hidden_dirs),
            revealed=list(view.revealed),
            device_files=list(view.device_files),
            host_files=list(view.host_files),
            files={**_passwd(uid, uid), **files},
            **common,
        )

    def _command(self, spec_path: Path) -> list[str]:
        init = [sys.executable, "-I", "-m", "sandbox_service.jail", str(spec_path)]
        prefix = [self._setpriv, "--pdeathsig", "KILL"] if self._setpriv else []
        if self.isolation is Isolation.NONE:
            return [*prefix, *init]
        assert self._unshare is not None
        namespaces = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork"]
        return [*prefix, self._unshare, *namespaces, "--kill-child=SIGKILL", *init]

    async def run(
        self,
        run_dir: Path,
        name: str,
        argv: list[str],
        *,
        uid: int,
        files: dict[str, str] | None = None,
        reports: dict[str, str] | None = None,
    ) -> JailResult:
        """Runs `argv` over the workspace in `run_dir/in`; `name` keeps runs apart.

        Args:
            run_dir: The run's scratch directory (holds `in/` with the workspace).
            name: This tool run's name, unique within the run.
            argv: The command, with paths as the tool sees them (`paths(run_dir, name)`).
            uid: The unprivileged user (and group) id to run as.
            files: Extra files to create, by path from the jail's root (`/sandbox/x`).
            reports: Report files to collect after the run: name -> file name in the
                reports directory.

        Raises:
            JailBroken: the jail could not be built, or init failed.
        """
        output_dir = run_dir / f"out-{name}"
        spec_path = run_dir / f"spec-{name}.json"
        await asyncio.to_thread(output_dir.mkdir, mode=0o700)
        await asyncio.to_thread(_root_dir(run_dir, name).mkdir, mode=0o755)
        spec = self._spec(run_dir, name, output_dir, argv, uid, files or {}, reports or {})
        await asyncio.to_thread(spec_path.write_text, spec.to_json(), "utf-8")
        process = await asyncio.create_subprocess_exec(
            *self._command(spec_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": _JAIL_PATH, "LANG": "C.UTF-8"},
            cwd=run_dir,
        )
        overstayed = False
        try:
            assert process.stderr is not None
            stderr_task = asyncio.ensure_future(_read_capped(process.stderr, _INIT_STDERR_BYTES))
            try:
                # Not wait_for, which can swallow a cancellation on Python 3.11.
                async with asyncio.timeout(self.limits.wall_seconds + _INIT_GRACE_SECONDS):
                    await process.wait()
            except TimeoutError:
                overstayed = True
                log.error("sandbox init for %s overstayed; killing it", name)
                _kill(process)
                await process.wait()
            init_stderr = await stderr_task
        except BaseException:
            # Cancelled (the caller went away): init and, with it, the namespace die.
            _kill(process)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(process.wait())
            raise
        return await asyncio.to_thread(
            _collect, output_dir, init_stderr, process.returncode, overstayed, spec
        )


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> bytes:
    """Reads to the end, keeping the first `cap` bytes."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk[: max(cap - len(kept), 0)]
    return bytes(kept)


def _root_dir(run_dir: Path, name: str) -> Path:
    # Each tool run starts from a fresh copy of the workspace.
    return run_dir / f"root-{name}"


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _collect(
    output_dir: Path, init_stderr: bytes, returncode: int | None, overstayed: bool, spec: Spec
) -> JailResult:
    try:
        raw = json.loads((output_dir / RESULT_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if overstayed:
            return JailResult(
                exit_code=None,
                signal=None,
                timed_out=True,
                output_exceeded=False,
                exec_error=None,
                cpu_seconds=0.0,
                wall_seconds=spec.limits.wall_seconds + _INIT_GRACE_SECONDS,
                stdout=b"",
                stderr=b"",
                overstayed=True,
            )
        detail = init_stderr.decode("utf-8", "replace").strip()[-2000:] or "no message"
        raise JailBroken(f"sandbox init exited with {returncode} and no result: {detail}") from None
    if "setup_error" in raw:
        raise JailBroken(f"the jail could not be built: {raw['setup_error']}")
    problems = {str(k): str(v) for k, v in raw.get("reports", {}).items()}
    reports = {
        name: _read(output_dir / f"report-{name}") for name in problems if not problems[name]
    }
    return JailResult(
        exit_code=raw["exit_code"],
        signal=raw["signal"],
        timed_out=bool(raw["timed_out"]),
        output_exceeded=bool(raw["output_exceeded"]),
        exec_error=raw["exec_error"],
        cpu_seconds=float(raw["cpu_seconds"]),
        wall_seconds=float(raw["wall_seconds"]),
        stdout=_read(output_dir / STDOUT_FILE),
        stderr=_read(output_dir / STDERR_FILE),
        reports=reports,
        report_problems=problems,
        overstayed=overstayed,
    )

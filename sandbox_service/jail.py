"""The sandbox's init process: builds the jail, runs one tool in it, reports, and exits.

Run as `python -I -m sandbox_service.jail SPEC.json`. In `namespaces` mode the service
starts it through `unshare` in fresh mount, network, PID, IPC and UTS namespaces, so it
is PID 1 there, still root, and still sees the host's files. It then:

1. mounts a size-capped tmpfs as the new root and lays out only what the tools need:
   /usr and the Python interpreter and virtualenv (read-only, nosuid), an empty view of
   site-packages with only the toolchain bound back in, a minimal /etc, /dev and /proc,
   the workspace copied in, /tmp;
2. brings up the namespace's own loopback (the host's stays out of reach) and
   pivots into the new root, detaching the host's file systems entirely;
3. forks the tool as an unprivileged user with no new privileges, rlimits on CPU,
   memory, processes, open files and file size, and a clean environment;
4. reads its output up to a budget and waits up to the wall time; then kills every
   process left in the namespace (kill(-1) from PID 1) and writes the result, the
   output and the tool's report files into the output directory it opened first.

When init exits the kernel kills whatever is left in its PID namespace.

In `none` mode (MAESTRO_SANDBOX_ISOLATION=none) nothing is isolated: the same program
runs the tool in a plain directory with the same limits on time and output, and kills
the tool's process group at the end.

Standard library only, and everything is imported before the pivot: after it, the
host's files (this module's source included) are gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import stat
import sys
import time
from dataclasses import dataclass

from sandbox_service.jail_layout import SetupError, build_jail, inside, lay_out
from sandbox_service.jail_spec import (
    NAMESPACES,
    REPORTS_DIR,
    RESULT_FILE,
    STDERR_FILE,
    STDOUT_FILE,
    WORKSPACE_DIR,
    Limits,
    Spec,
)

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1
_READ_CHUNK = 65536
# Exit code of a tool that could not be started (exec failed).
EXEC_FAILED = 127

_libc = ctypes.CDLL(None, use_errno=True)


def _set_limits(limits: Limits) -> None:
    cpu = max(1, limits.cpu_seconds)
    # The soft limit sends SIGXCPU; the hard one a second later SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _start_tool(spec: Spec, workdir: str, stdout_w: int, stderr_w: int, status_w: int) -> int:
    """Forks the tool; init is single-threaded, so forking without exec is safe here."""
    pid = os.fork()
    if pid != 0:
        return pid
    try:
        os.setsid()
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(stdout_w, 1)
        os.dup2(stderr_w, 2)
        # Dies with init even if init is killed before it can clean up.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _set_limits(spec.limits)
        if spec.mode == NAMESPACES:
            os.setgroups([])
            os.setresgid(spec.gid, spec.gid, spec.gid)
            os.setresuid(spec.uid, spec.uid, spec.uid)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        os.chdir(workdir)
        os.execve(spec.argv[0], spec.argv, spec.env)
    except BaseException as err:  # noqa: BLE001 - reported to init through the status pipe
        with contextlib.suppress(OSError):
            os.write(status_w, f"cannot start {spec.argv[0]}: {err}".encode()[:4096])
    os._exit(EXEC_FAILED)


def _kill_everything(spec: Spec, tool_pid: int) -> None:
    if spec.mode == NAMESPACES and os.getpid() == 1:
        # From PID 1, kill(-1) reaches every other process of the namespace.
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
    else:
        with contextlib.suppress(OSError):
            os.killpg(tool_pid, signal.SIGKILL)


@dataclass
class _Watch:
    """What init saw of the tool."""

    output: dict[int, bytearray]
    total: int = 0
    timed_out: bool = False
    output_exceeded: bool = False


def _watch(tool_pid: int, pipes: dict[int, int], limits: Limits) -> _Watch:
    """Reads the tool's output until it exits, the wall time ends or output overflows."""
    pidfd = os.pidfd_open(tool_pid)
    watch = _Watch(output={fd: bytearray() for fd in pipes})
    deadline = time.monotonic() + limits.wall_seconds
    open_fds = set(pipes)
    for fd in open_fds:
        os.set_blocking(fd, False)
    exited = False
    try:
        while not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                watch.timed_out = True
                break
            ready, _, _ = select.select([*open_fds, pidfd], [], [], remaining)
            exited = pidfd in ready
            # After the exit, drain what is buffered; descendants may still hold the pipes.
            for fd in [fd for fd in open_fds if fd in ready or exited]:
                if not _drain(fd, watch, limits, open_fds):
                    return watch
    finally:
        os.close(pidfd)
    return watch


def _drain(fd: int, watch: _Watch, limits: Limits, open_fds: set[int]) -> bool:
    """Reads what is available; False once the output budget is spent."""
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return True
        if not chunk:
            open_fds.discard(fd)
            return True
        room = limits.output_bytes - watch.total
        watch.output[fd] += chunk[: max(room, 0)]
        watch.total += len(chunk)
        if watch.total > limits.output_bytes:
            watch.output_exceeded = True
            return False


def _reap_all(tool_pid: int) -> tuple[int, resource.struct_rusage]:
    """Waits for the tool (its status and usage), then for every orphan left."""
    _, status, usage = os.wait4(tool_pid, 0)
    while True:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == 0:
            break
    return status, usage


def _read_report(path: str, limit: int) -> tuple[bytes | None, str]:
    """Reads a report the tool wrote: a regular file, never through a symlink or FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, "missing"
    except OSError as err:
        return None, f"cannot open: {err.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, "not a regular file"
        data = bytearray()
        while len(data) <= limit:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                return bytes(data), ""
            data += chunk
        return None, f"larger than {limit} bytes"
    finally:
        os.close(fd)


def _write(out_fd: int, name: str, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=out_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def run(spec: Spec) -> dict[str, object]:
    """Builds the jail (or the plain directory), runs the tool and collects its results.

    Returns:
        The result written to result.json; `setup_error` is set when the jail could
        not be built.
    """
    out_fd = os.open(spec.output_dir, os.O_RDONLY | os.O_DIRECTORY)
    started = time.monotonic()
    try:
        if spec.mode == NAMESPACES:
            if os.getpid() != 1:
                raise SetupError("init is not PID 1 of a new PID namespace")
            build_jail(spec)
            root = "/"
        else:
            root = spec.root_dir
            lay_out(spec, root)
    except (OSError, SetupError) as err:
        result: dict[str, object] = {"setup_error": f"{type(err).__name__}: {err}"}
        _write(out_fd, RESULT_FILE, json.dumps(result).encode())
        return result
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    status_r, status_w = os.pipe()
    tool_pid = _start_tool(spec, inside(root, WORKSPACE_DIR), stdout_w, stderr_w, status_w)
    for fd in (stdout_w, stderr_w, status_w):
        os.close(fd)
    watch = _watch(tool_pid, {stdout_r: 1, stderr_r: 2}, spec.limits)
    _kill_everything(spec, tool_pid)
    status, usage = _reap_all(tool_pid)
    exec_error = os.read(status_r, 4096).decode("utf-8", "replace")
    reports: dict[str, str] = {}  # name -> why it is missing ("" when it was read)
    result = {
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "timed_out": watch.timed_out,
        "output_exceeded": watch.output_exceeded,
        "output_bytes": watch.total,
        "exec_error": exec_error or None,
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "wall_seconds": round(time.monotonic() - started, 3),
        "reports": reports,
    }
    _write(out_fd, STDOUT_FILE, bytes(watch.output[stdout_r]))
    _write(out_fd, STDERR_FILE, bytes(watch.output[stderr_r]))
    for name, path in spec.reports.items():
        report_path = inside(root, os.path.join(REPORTS_DIR, path))
        data, problem = _read_report(report_path, spec.limits.report_bytes)
        if data is not None:
            _write(out_fd, f"report-{name}", data)
        reports[name] = problem
    _write(out_fd, RESULT_FILE, json.dumps(result).encode())
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sandbox_service.jail SPEC.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as file:
        spec = Spec.from_json(file.read())
    try:
        result = run(spec)
    except Exception as err:
        print(f"sandbox init failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 1 if "setup_error" in result else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

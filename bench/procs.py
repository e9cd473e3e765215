"""What the kernel says about a process and the machine: /proc reads, Linux only."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Memory:
    """A process's resident memory, in KiB."""

    rss_kib: int
    """VmRSS: resident now."""
    hwm_kib: int
    """VmHWM: the peak resident size since the process started."""


def read_memory(pid: int) -> Memory:
    """Reads VmRSS and VmHWM from /proc/<pid>/status.

    Raises:
        OSError: the process is gone.
    """
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])  # "12345 kB"
    return Memory(rss_kib=fields["VmRSS"], hwm_kib=fields["VmHWM"])


def read_cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far, in seconds.

    Raises:
        OSError: the process is gone.
    """
    fields = _stat_fields(pid)
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLOCK_TICKS


def read_children_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process's children that it has waited for (and
    of theirs, that they waited for), in seconds.

    Raises:
        OSError: the process is gone.
    """
    fields = _stat_fields(pid)
    cutime, cstime = int(fields[13]), int(fields[14])  # fields 16 and 17 of proc(5)
    return (cutime + cstime) / _CLOCK_TICKS


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 on (index 0 is field 3 of proc(5))."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return text.rpartition(")")[2].split()


def file_size(path: Path) -> int:
    """The file's size in bytes, 0 when it does not exist (e.g. a checkpointed WAL)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def python_speed_ms() -> float:
    """Milliseconds a pure-Python loop takes here (`sum(range(10**6))`, best of 5): a
    figure to compare hosts by, since their speed differs by 2-3x between runs."""
    best = math.inf
    for _ in range(5):
        began = time.perf_counter()
        sum(range(10**6))
        best = min(best, time.perf_counter() - began)
    return best * 1000


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `0.52 0.58 0.51`."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _memory_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _git_revision(repo: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    # Other people edit the tree while the bench runs: say so rather than hide it.
    return f"{head} (with uncommitted changes)" if dirty else head


def machine_info(repo: Path) -> dict[str, str]:
    """The facts a reader needs to compare these numbers with their own."""
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "memory": _memory_total(),
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "maestro commit": _git_revision(repo),
    }

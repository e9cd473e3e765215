"""What the jail's init is told to do: the spec the service writes as JSON, the limits,
and where things are inside the jail. Standard library only (init imports it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

NAMESPACES, NONE = "namespaces", "none"

# Where things are inside the jail root (`/` in namespaces mode, a plain directory in
# none mode). The parent of the workspace holds our pytest.ini, so pytest never climbs
# above the workspace looking for a configuration.
SANDBOX_DIR = "sandbox"
WORKSPACE_DIR = "sandbox/workspace"
REPORTS_DIR = "sandbox/reports"
TMP_DIR = "tmp"

RESULT_FILE = "result.json"
STDOUT_FILE = "stdout"
STDERR_FILE = "stderr"


@dataclass(frozen=True)
class Limits:
    """Limits on one tool run. Per process: cpu, memory, open files, file size."""

    wall_seconds: float
    cpu_seconds: int
    memory_bytes: int
    processes: int
    open_files: int
    file_bytes: int
    disk_bytes: int
    output_bytes: int
    report_bytes: int


@dataclass(frozen=True)
class Spec:
    """What init does; written by the service as JSON next to the run's directories."""

    mode: str
    input_dir: str  # the workspace as the service wrote it (host path)
    root_dir: str  # the jail root: a tmpfs mountpoint (namespaces) or a directory (none)
    output_dir: str  # where init writes the result (host path, opened before the pivot)
    argv: list[str]
    env: dict[str, str]
    limits: Limits
    uid: int = 0
    gid: int = 0
    read_only_binds: list[str] = field(default_factory=list)
    symlinks: dict[str, str] = field(default_factory=dict)
    hidden_dirs: list[str] = field(default_factory=list)
    revealed: list[str] = field(default_factory=list)
    device_files: list[str] = field(default_factory=list)
    host_files: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)  # name -> file in REPORTS_DIR

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @staticmethod
    def from_json(text: str) -> Spec:
        raw = json.loads(text)
        raw["limits"] = Limits(**raw["limits"])
        return Spec(**raw)

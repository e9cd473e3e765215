"""The sandbox service as a real process, for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from maestro.core.client import insecure_channel

START_SECONDS = 30.0
MIB = 1024 * 1024
# Short limits keep the suite fast; each hostile case ends at one of them.
TEST_LIMITS = {
    "MAESTRO_SANDBOX_WALL_SECONDS": "4",
    "MAESTRO_SANDBOX_CPU_SECONDS": "2",
    "MAESTRO_SANDBOX_MEMORY_BYTES": str(512 * MIB),
    "MAESTRO_SANDBOX_PROCESSES": "64",
    "MAESTRO_SANDBOX_FILE_BYTES": str(16 * MIB),
    "MAESTRO_SANDBOX_DISK_BYTES": str(64 * MIB),
    "MAESTRO_SANDBOX_MAX_TOTAL_BYTES": str(8 * MIB),
    "MAESTRO_SANDBOX_OUTPUT_BYTES": str(MIB),
    "MAESTRO_SANDBOX_HEARTBEAT_INTERVAL_SECONDS": "0.5",
    # Apart from other suites that may run on this machine at the same time: the
    # process limit counts per user id.
    "MAESTRO_SANDBOX_SANDBOX_UID": str(61000 + (os.getpid() % 800) * 4),
}


@dataclass(frozen=True)
class SandboxProcess:
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path
    scratch: Path
    first_uid: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def sandbox_process(
    directory: Path, env: Mapping[str, str] | None = None, prefix: Sequence[str] = ()
) -> Iterator[SandboxProcess]:
    """Starts `python -m sandbox_service` and yields once it has bound its port."""
    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "sandbox.port"
    scratch = directory / "scratch"
    scratch.mkdir(exist_ok=True)
    full_env = {
        **os.environ,
        **TEST_LIMITS,
        "MAESTRO_SANDBOX_PORT_FILE": str(port_file),
        "MAESTRO_SANDBOX_SCRATCH_DIR": str(scratch),
        # These tests call the sandbox directly; who may call it is tested in
        # tests/e2e/test_auth.py.
        "MAESTRO_SERVICE_AUTH": "disabled",
        **(env or {}),
    }
    log_path = directory / "sandbox.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "sandbox_service"],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + START_SECONDS
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield SandboxProcess(
            address=f"127.0.0.1:{port_file.read_text().strip()}",
            process=process,
            log_path=log_path,
            scratch=scratch,
            first_uid=int(full_env["MAESTRO_SANDBOX_SANDBOX_UID"]),
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def health_status(address: str) -> int:
    channel = insecure_channel(address)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(response.status)
    finally:
        await channel.close(None)


def processes_of_uids(uids: range) -> list[int]:
    """Pids of live processes whose real uid is in `uids` (the sandbox's users)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) in uids:
                found.append(int(entry.name))
    return found

"""The agent loop's `run_checks` tool runs the workspace's checks through this interface.

The sandbox service (its own API, built separately) runs pytest, ruff and compile
checks on a workspace in isolation. The loop only needs the small protocol below; an
adapter over the sandbox client (`maestro/sandbox/client.py`, `SandboxClient(address)
.run_checks(request, *, timeout) -> report`) implements it once that client exists.
Until then a worker with MAESTRO_WORKER_SANDBOX_ADDRESS set refuses to start, and a
worker without it offers no `run_checks` tool at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pydantic import BaseModel, ConfigDict


class ChecksReport(BaseModel):
    """What the checks found.

    Attributes:
        passed: Tests that passed.
        failed: Tests that failed.
        errors: Other problems (lint findings, compile errors, collection errors).
        details: The report the model reads (failures first, within a size cap).
    """

    model_config = ConfigDict(frozen=True)

    passed: int = 0
    failed: int = 0
    errors: int = 0
    details: str = ""

    def headline(self) -> str:
        """One line for progress notes: "14 passed, 2 failed"."""
        line = f"{self.passed} passed, {self.failed} failed"
        return f"{line}, {self.errors} errors" if self.errors else line


class CheckRunner(Protocol):
    """Runs the checks on a workspace snapshot."""

    async def run_checks(self, files: Mapping[str, str], *, timeout: float) -> ChecksReport:
        """Runs every check on `files` (path -> text) within `timeout` seconds.

        Raises:
            MaestroError: the checks could not run (the sandbox is unreachable, ...).
        """
        ...


class SandboxNotAvailable(RuntimeError):
    """A sandbox address is configured, but this worker cannot use it."""


def sandbox_check_runner(address: str) -> CheckRunner:
    """The CheckRunner for the sandbox service at `address`.

    Raises:
        SandboxNotAvailable: always, until the sandbox client exists (see module doc).
    """
    raise SandboxNotAvailable(
        f"MAESTRO_WORKER_SANDBOX_ADDRESS is set ({address}), but this worker has no "
        "sandbox client yet; unset it to run without the run_checks tool"
    )

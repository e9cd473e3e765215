"""The agent loop's `run_checks` tool runs the workspace's checks through this interface.

The sandbox service runs pytest, ruff and compile checks on a workspace in isolation.
The loop only needs the small protocol below; `SandboxCheckRunner` implements it over
the sandbox client. A worker without MAESTRO_WORKER_SANDBOX_ADDRESS offers no
`run_checks` tool at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from maestro.sandbox.client import SandboxClient
from maestro.sandbox.gate import render_check_report
from maestro.sandbox.models import CheckName, CheckRequest, SandboxFile

# The report the model reads after run_checks: failures first, within this size.
DETAILS_BUDGET_BYTES = 8 * 1024


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


class SandboxCheckRunner:
    """Runs pytest, ruff and compile on a workspace in the sandbox service."""

    def __init__(self, address: str) -> None:
        self._client = SandboxClient(address)

    async def run_checks(self, files: Mapping[str, str], *, timeout: float) -> ChecksReport:
        request = CheckRequest(
            files=tuple(SandboxFile(path=p, content=t.encode()) for p, t in files.items()),
            checks=(CheckName.PYTEST, CheckName.RUFF, CheckName.COMPILE),
            label="run_checks",
        )
        report = await self._client.run_checks(request, timeout=timeout)
        metrics = report.metrics
        not_run = [c for c in report.checks if not c.ran]
        return ChecksReport(
            passed=int(metrics.get("tests_passed", 0)),
            failed=int(metrics.get("tests_failed", 0)),
            errors=int(
                metrics.get("tests_errors", 0)
                + metrics.get("lint_errors", 0)
                + metrics.get("compile_errors", 0)
            )
            + len(not_run),
            details=render_check_report(report, budget_bytes=DETAILS_BUDGET_BYTES),
        )

    async def aclose(self) -> None:
        await self._client.close()


def sandbox_check_runner(address: str) -> SandboxCheckRunner:
    """The CheckRunner for the sandbox service at `address`."""
    return SandboxCheckRunner(address)

"""Runs a check request: a fresh scratch directory, each check in its own jail, a report.

No grpc here. The run works in a task; meanwhile the stream carries a heartbeat every
interval. Concurrent runs each get a scratch directory and an unprivileged user id of
their own (the process limit is per user id), at most `max_concurrent` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from maestro.core.errors import DeadlineExceeded, FailedPrecondition
from maestro.sandbox.models import CheckReport, CheckRequest, CheckResult, Isolation
from sandbox_service.checks import ReportBounds, interpret, invocation
from sandbox_service.isolation import Jail, JailBroken
from sandbox_service.probe import probe_isolation

log = logging.getLogger(__name__)


class Heartbeat:
    """The run is alive."""


def workspace_modules(request: CheckRequest) -> set[str]:
    """Top-level module names the workspace itself provides (packages and modules)."""
    names: set[str] = set()
    for file in request.files:
        first, _, rest = file.path.partition("/")
        if rest:
            names.add(first)
        elif first.endswith(".py"):
            names.add(first.removesuffix(".py"))
    # A src/ layout provides the packages inside it.
    names |= {f.path.split("/")[1] for f in request.files if f.path.startswith("src/")}
    return names


def _write_workspace(directory: Path, request: CheckRequest) -> None:
    directory.mkdir(mode=0o700)
    for file in request.files:
        path = directory / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.content)


class SandboxRunner:
    """Owns the jail, the scratch area and the concurrency slots."""

    def __init__(
        self,
        jail: Jail,
        *,
        scratch_root: Path | None,
        max_concurrent: int,
        first_uid: int,
        heartbeat_interval: float,
        max_run_seconds: float,
        bounds: ReportBounds,
        ruff_select: str,
    ) -> None:
        self.jail = jail
        self._scratch_root = scratch_root
        self._scratch: Path | None = None
        self._slots: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(max_concurrent):
            self._slots.put_nowait(slot)
        self._first_uid = first_uid
        self._heartbeat_interval = heartbeat_interval
        self._max_run_seconds = max_run_seconds
        self._bounds = bounds
        self._ruff_select = ruff_select
        self.problem = "not started"
        self._reprobing: asyncio.Task[None] | None = None

    @property
    def isolation(self) -> Isolation:
        return self.jail.isolation

    async def start(self) -> None:
        """Creates the scratch area and probes that isolation really works."""
        self._scratch = Path(
            await asyncio.to_thread(
                tempfile.mkdtemp, prefix="maestro-sandbox-", dir=self._scratch_root
            )
        )
        await self.reprobe()

    async def reprobe(self) -> None:
        """Runs the isolation probe again and records what is wrong, if anything."""
        assert self._scratch is not None
        slot = await self._slots.get()
        try:
            self.problem = await probe_isolation(
                self.jail, self._scratch, uid=self._first_uid + slot
            )
        finally:
            self._slots.put_nowait(slot)
        if self.problem:
            log.error("the sandbox cannot isolate generated code: %s", self.problem)
        else:
            log.info("isolation probe passed (%s)", self.isolation.value)

    async def readiness(self) -> None:
        """Raises while the sandbox cannot do its job (for the health probe)."""
        if self.problem:
            raise RuntimeError(self.problem)

    async def close(self) -> None:
        if self._reprobing is not None:
            self._reprobing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reprobing
        if self._scratch is not None:
            await asyncio.to_thread(shutil.rmtree, self._scratch, True)

    async def run(
        self, request: CheckRequest, *, time_remaining: float | None = None
    ) -> AsyncIterator[Heartbeat | CheckReport]:
        """Yields heartbeats while the checks run, then the report.

        Args:
            request: The workspace and the checks.
            time_remaining: The caller's deadline, in seconds; None = max_run_seconds.

        Raises:
            FailedPrecondition: isolation is not available here.
            JailBroken: the jail broke while setting up (health follows).
            DeadlineExceeded: the checks outlasted the caller's deadline.
        """
        if self.problem:
            raise FailedPrecondition(
                f"the sandbox cannot isolate generated code: {self.problem} (the only way "
                "to run unisolated is MAESTRO_SANDBOX_ISOLATION=none)"
            )
        budget = self._max_run_seconds if time_remaining is None else time_remaining
        work = asyncio.create_task(self._run_within(request, budget))
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=self._heartbeat_interval)
                if done:
                    break
                yield Heartbeat()
            yield work.result()
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work

    async def _run_within(self, request: CheckRequest, budget: float) -> CheckReport:
        try:
            # Not wait_for, which can swallow a cancellation on Python 3.11.
            async with asyncio.timeout(budget):
                return await self._run(request)
        except TimeoutError:
            raise DeadlineExceeded(f"the checks took longer than {budget:.0f}s") from None

    async def _run(self, request: CheckRequest) -> CheckReport:
        assert self._scratch is not None
        started = time.monotonic()
        slot = await self._slots.get()
        run_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, dir=self._scratch))
        try:
            await asyncio.to_thread(_write_workspace, run_dir / "in", request)
            results = [
                await self._check(request, run_dir, index, self._first_uid + slot)
                for index in range(len(request.checks))
            ]
        except JailBroken:
            # Health follows: the probe says whether isolation still works at all.
            if self._reprobing is None or self._reprobing.done():
                self._reprobing = asyncio.create_task(self.reprobe())
            raise
        finally:
            self._slots.put_nowait(slot)
            await asyncio.to_thread(shutil.rmtree, run_dir, True)
        metrics = {name: value for result in results for name, value in result.metrics.items()}
        return CheckReport(
            isolation=self.isolation,
            metrics=metrics,
            checks=tuple(results),
            duration_seconds=round(time.monotonic() - started, 3),
        )

    async def _check(
        self, request: CheckRequest, run_dir: Path, index: int, uid: int
    ) -> CheckResult:
        check = request.checks[index]
        name = f"{index}-{check.value}"
        paths = self.jail.paths(run_dir, name)
        call = invocation(
            check,
            paths=paths,
            python=self.jail.view.python,
            ruff=self.jail.view.ruff,
            coverage=request.coverage,
            ruff_select=self._ruff_select,
        )
        result = await self.jail.run(
            run_dir,
            name,
            call.argv,
            uid=uid,
            files=call.files,
            reports=call.reports,
        )
        checked = interpret(
            check,
            result,
            limits=self.jail.limits,
            bounds=self._bounds,
            workspace=paths.workspace,
            workspace_modules=workspace_modules(request),
        )
        log.info(
            "check %s of %s: %s %s",
            check.value,
            request.label or "a request",
            checked.outcome.value,
            checked.reason,
        )
        return checked

"""The sandbox's metrics: how long each check ran, and how it ended."""

from __future__ import annotations

from collections.abc import AsyncIterator

from prometheus_client import Counter, Histogram

from maestro.core.tracing import span
from maestro.sandbox.models import CheckReport, CheckRequest
from sandbox_service.runner import Heartbeat, SandboxRunner

_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)

CHECK_SECONDS = Histogram(
    "maestro_sandbox_check_duration_seconds",
    "Wall time of one check (pytest, ruff, compile) in the sandbox, by how it ended.",
    ["check", "outcome"],
    buckets=_BUCKETS,
)
RUN_SECONDS = Histogram(
    "maestro_sandbox_run_duration_seconds",
    "Wall time of one RunChecks request: writing the workspace and every check.",
    buckets=_BUCKETS,
)
CHECKS = Counter(
    "maestro_sandbox_checks_total", "Checks run in the sandbox, by outcome.", ["check", "outcome"]
)


def record_report(report: CheckReport) -> None:
    """Adds one report's checks to the metrics."""
    RUN_SECONDS.observe(report.duration_seconds)
    for result in report.checks:
        CHECKS.labels(result.check.value, result.outcome.value).inc()
        CHECK_SECONDS.labels(result.check.value, result.outcome.value).observe(
            result.duration_seconds
        )


class MeteredSandboxRunner(SandboxRunner):
    """A SandboxRunner whose reports are measured, each run in its own span."""

    async def run(
        self, request: CheckRequest, *, time_remaining: float | None = None
    ) -> AsyncIterator[Heartbeat | CheckReport]:
        checks = ",".join(check.value for check in request.checks)
        with span("maestro.sandbox_checks", {"maestro.checks": checks}):
            async for item in super().run(request, time_remaining=time_remaining):
                if isinstance(item, CheckReport):
                    record_report(item)
                yield item

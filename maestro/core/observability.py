"""What every service sets up to be observed: metrics endpoint, tracing, interceptors.

Each service's `__main__` calls `start_observability` once its settings are read, and
`close` when it stops; `serve` takes `server_interceptors()` for its server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maestro.core import tracing
from maestro.core.metrics import MetricsInterceptor, MetricsServer, serve_metrics
from maestro.core.settings import ServiceSettings


def server_interceptors() -> list[Any]:
    """Tracing first (it opens the call's span), then metrics, which annotate that span."""
    return [*tracing.server_interceptors(), MetricsInterceptor()]


@dataclass
class Observability:
    """The metrics endpoint and the tracer of one service process, either may be off."""

    metrics: MetricsServer | None = None
    tracing: tracing.Tracing | None = None

    def close(self) -> None:
        """Sends the spans still buffered and stops the metrics endpoint."""
        if self.tracing is not None:
            self.tracing.close()
        if self.metrics is not None:
            self.metrics.close()


def start_observability(service: str, settings: ServiceSettings) -> Observability:
    """Starts the metrics endpoint (when a port is set) and tracing (when an OTLP
    endpoint is set). Call before the server starts, so its first calls are seen."""
    traced = tracing.configure_tracing(service)
    metrics = None
    if settings.metrics_port is not None:
        metrics = serve_metrics(settings.host, settings.metrics_port, settings.metrics_port_file)
    return Observability(metrics=metrics, tracing=traced)

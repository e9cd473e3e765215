"""Prometheus metrics shared by every service: the HTTP endpoint and the RPC interceptor.

Each service serves its metrics on its own HTTP port (`MAESTRO_<SERVICE>_METRICS_PORT`;
unset: no endpoint, 0: a free port, written to `..._METRICS_PORT_FILE`). The endpoint
runs on prometheus_client's own thread, so a scrape never waits for the event loop.

RPCs are counted the way go-grpc-prometheus counts them, so existing dashboards fit:
`grpc_server_started_total`, `grpc_server_handled_total` (with the status code) and the
`grpc_server_handling_seconds` histogram, per service and method, plus the calls in
flight. Each service adds its own domain metrics (see `scheduler/observe.py`,
`persona_service/observe.py`, `sandbox_service/observe.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from maestro.core.tracing import annotate_current_span
from maestro.core.wrapped_handlers import WrappedHandlers

log = logging.getLogger(__name__)

# Seconds: from a health check's microseconds to a step attempt's many minutes.
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

RPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end (the whole stream for streaming RPCs).",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=RPC_BUCKETS,
)
RPC_IN_FLIGHT = Gauge(
    "grpc_server_in_flight",
    "RPCs being handled now (open streams included).",
    ["grpc_service", "grpc_method"],
)


def split_method(full: str) -> tuple[str, str]:
    """`/pkg.Service/Method` -> (`pkg.Service`, `Method`)."""
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or full


def in_flight(method: str) -> float:
    """How many calls of a method (by its short name) are being handled now."""
    total = 0.0
    for metric in RPC_IN_FLIGHT.collect():
        for sample in metric.samples:
            if sample.labels.get("grpc_method") == method:
                total += sample.value
    return total


class _MethodMetrics:
    """The RPC metrics of one method, its label children looked up once (`labels()`
    takes a lock and builds a key on every call)."""

    def __init__(self, kind: str, full_method: str) -> None:
        service, method = split_method(full_method)
        self._labels = (kind, service, method)
        self._started = RPC_STARTED.labels(kind, service, method)
        self._in_flight = RPC_IN_FLIGHT.labels(service, method)
        self._seconds = RPC_SECONDS.labels(kind, service, method)
        self._handled: dict[str, Any] = {}

    def begin(self) -> float:
        """Counts a call that starts; returns its start time, for `end`."""
        self._started.inc()
        self._in_flight.inc()
        return time.perf_counter()

    def end(
        self,
        began: float,
        context: grpc.aio.ServicerContext[Any, Any],
        failed: BaseException | None,
    ) -> None:
        """Counts the call's end, by the status it ended with, and its duration."""
        code = _code_name(context, failed)
        self._in_flight.dec()
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = RPC_HANDLED.labels(*self._labels, code)
        handled.inc()
        self._seconds.observe(time.perf_counter() - began)


def _code_name(context: grpc.aio.ServicerContext[Any, Any], failed: BaseException | None) -> str:
    """The status the call ended with, as go-grpc-prometheus spells it (`OK`, `NOT_FOUND`)."""
    code: Any = None
    try:
        code = context.code()
    except (AttributeError, NotImplementedError):  # older grpc.aio contexts
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        # grpc.aio reports an aborted call's code as the number of the C core's enum.
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    if isinstance(failed, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    if failed is not None:
        return grpc.StatusCode.UNKNOWN.name
    return grpc.StatusCode.OK.name


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every RPC, and names the run, step and attempt on its span.

    It sits outside the error-mapping interceptor, so it sees the status code each
    call really ended with. Streams are measured from the first to the last message.
    """

    def __init__(self) -> None:
        self._handlers = WrappedHandlers(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._handlers.get(handler_call_details.method, handler)

    @staticmethod
    def _wrap(method: str, handler: Any) -> Any:
        if handler.unary_unary is not None:
            inner_unary: Any = handler.unary_unary
            metrics = _MethodMetrics("unary", method)

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                annotate_current_span(request)
                began = metrics.begin()
                failed: BaseException | None = None
                try:
                    response = await inner_unary(request, context)
                    annotate_current_span(response)
                    return response
                except BaseException as err:
                    failed = err
                    raise
                finally:
                    metrics.end(began, context, failed)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _measured_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _measured_stream(handler.stream_stream, method, stream_in=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


async def _annotating(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        annotate_current_span(request)
        yield request


def _measured_stream(inner: Any, method: str, *, stream_in: bool = False) -> Any:
    """Wraps a server-streaming handler (`stream_in`: a bidirectional one); both of
    grpc.aio's styles end up a generator here only when the inner one is (the error
    interceptor keeps the style)."""
    import inspect

    metrics = _MethodMetrics("bidi_stream" if stream_in else "server_stream", method)
    if inspect.isasyncgenfunction(inner):

        async def generator(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if stream_in:
                request = _annotating(request)
            else:
                annotate_current_span(request)
            began = metrics.begin()
            failed: BaseException | None = None
            try:
                async for response in inner(request, context):
                    yield response
            except BaseException as err:
                failed = err
                raise
            finally:
                metrics.end(began, context, failed)

        return generator

    async def writer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if stream_in:
            request = _annotating(request)
        else:
            annotate_current_span(request)
        began = metrics.begin()
        failed: BaseException | None = None
        try:
            await inner(request, context)
        except BaseException as err:
            failed = err
            raise
        finally:
            metrics.end(began, context, failed)

    return writer


@dataclass
class MetricsServer:
    """The HTTP endpoint of one process's metrics."""

    host: str
    port: int
    _httpd: WSGIServer
    _thread: Thread

    @property
    def url(self) -> str:
        """`http://HOST:PORT/metrics`."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stops answering scrapes."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_metrics(host: str, port: int, port_file: Path | None = None) -> MetricsServer:
    """Starts the metrics endpoint on its own thread.

    Args:
        host: The address to listen on.
        port: The port; 0 picks a free one.
        port_file: Written (atomically) with the bound port, for a local stack.

    Raises:
        SystemExit: the port cannot be bound (a clear message, as for bad settings).
    """
    try:
        httpd, thread = start_http_server(port, addr=host)
    except OSError as err:
        raise SystemExit(f"cannot serve metrics on {host}:{port}: {err.strerror}") from None
    bound = int(httpd.server_port)
    if port_file is not None:
        # Like the gRPC port file: atomic, and 0600 (it sits in a private data directory).
        tmp = port_file.with_suffix(port_file.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(str(bound))
        os.chmod(tmp, 0o600)
        os.replace(tmp, port_file)
    server = MetricsServer(host, bound, httpd, thread)
    log.info("metrics on %s", server.url)
    return server

"""Serving bootstrap shared by every service.

One place does what every server needs: the error-mapping interceptor, request ids in
log context, health (NOT_SERVING until ready and again while draining), reflection,
the port file for local stacks, and graceful shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from maestro.core.client import RETRY_AFTER_METADATA, server_options
from maestro.core.errors import MaestroError
from maestro.core.lifecycle import exit_with_parent
from maestro.core.log_setup import request_id_var
from maestro.core.settings import ServiceSettings

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _abort_for(err: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if isinstance(err, MaestroError):
        if err.retry_after is not None and math.isfinite(err.retry_after):
            context.set_trailing_metadata(
                ((RETRY_AFTER_METADATA, str(round(err.retry_after * 1000))),)
            )
        await context.abort(grpc.StatusCode[err.code.value], err.message)
    log.exception("unexpected error while serving a request")
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error (request id {request_id_var.get()})"
    )


def _bind_request_id(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    incoming = dict(context.invocation_metadata() or ())
    request_id = incoming.get("x-request-id")
    request_id_var.set(request_id if isinstance(request_id, str) else uuid.uuid4().hex[:16])


def _wrap_stream(inner: Any) -> Any:
    """Wraps a server-streaming handler in the error mapping, keeping its style.

    grpc.aio takes two styles of streaming handler: an async generator that yields
    responses, or a coroutine that writes them with `context.write` (the health
    service's Watch is one). Each must be wrapped in its own style.
    """
    if inspect.isasyncgenfunction(inner):

        async def generator(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            _bind_request_id(context)
            try:
                async for response in inner(request, context):
                    yield response
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as err:
                await _abort_for(err, context)

        return generator

    async def writer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        _bind_request_id(context)
        try:
            await inner(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as err:
            await _abort_for(err, context)

    return writer


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Maps MaestroError to its status code and anything else to a generic INTERNAL.

    This is the only place on the server side where exceptions become status codes.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            inner_unary: Any = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                _bind_request_id(context)
                try:
                    return await inner_unary(request, context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as err:
                    await _abort_for(err, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


READINESS_INTERVAL_SECONDS = 5.0
READINESS_TIMEOUT_SECONDS = 5.0


async def probe_readiness(
    health: HealthServicer,
    service_names: Sequence[str],
    readiness: Callable[[], Awaitable[None]],
    *,
    interval: float = READINESS_INTERVAL_SECONDS,
) -> None:
    """Keeps health in step with whether the service can do its job. Runs until cancelled."""
    serving = True
    while True:
        await asyncio.sleep(interval)
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
                await readiness()
            ready, problem = True, ""
        except Exception as err:
            ready, problem = False, f"{type(err).__name__}: {err}"
        if ready != serving:
            serving = ready
            if ready:
                log.info("ready again: health is SERVING")
            else:
                log.error("not ready (%s): health is NOT_SERVING", problem)
            for name in ("", *service_names):
                await health.set(name, SERVING if ready else NOT_SERVING)


def write_port_file(path: Path, port: int) -> None:
    """Writes the port atomically, so a reader never sees a half-written number."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)


async def serve(
    settings: ServiceSettings,
    *,
    service_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
    on_stop: Callable[[], Awaitable[None]] | None = None,
    readiness: Callable[[], Awaitable[None]] | None = None,
    on_drain: Callable[[], Awaitable[None]] | None = None,
    on_serving: Callable[[], None] | None = None,
) -> None:
    """Runs a gRPC server until SIGTERM or SIGINT, then drains it.

    Args:
        settings: where to listen and how long to drain.
        service_names: full names of the services `register` adds (for reflection).
        register: adds the service implementations to the server.
        on_stop: called after the server stopped accepting calls and drained.
        readiness: raises when the service cannot do its job (its store is unusable,
            say); probed periodically, and health says NOT_SERVING while it fails.
        on_drain: called once health says NOT_SERVING, while the server still answers
            (a scheduler finishes its attempts in flight and hands its runs back).
        on_serving: called once health says SERVING (to start background warm-ups
            that must not delay it).
    """
    server = grpc.aio.server(interceptors=[ErrorInterceptor()], options=server_options())
    try:
        await _serve_until_signalled(
            server, settings, service_names, register, readiness, on_serving
        )
        if on_drain is not None:
            await on_drain()
    finally:
        # Also on a failed start, so no server thread or open database keeps the
        # process alive after it has said it cannot run.
        await server.stop(settings.shutdown_grace_seconds)
        if on_stop is not None:
            await on_stop()
        log.info("stopped")


async def _serve_until_signalled(
    server: grpc.aio.Server,
    settings: ServiceSettings,
    service_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
    readiness: Callable[[], Awaitable[None]] | None,
    on_serving: Callable[[], None] | None,
) -> None:
    health = HealthServicer()
    # Not ready until every registration finished and the port is bound.
    await health.set("", NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    register(server)
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    address = f"{settings.host}:{settings.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as err:
        raise SystemExit(f"cannot listen on {address}: {err}") from None
    await server.start()
    for name in ("", *service_names):
        await health.set(name, SERVING)
    if settings.port_file is not None:
        write_port_file(settings.port_file, port)
    log.info("serving %s on %s:%d", ", ".join(service_names), settings.host, port)
    if on_serving is not None:
        on_serving()

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stopping.set)
    exit_with_parent()
    probe = (
        asyncio.create_task(
            probe_readiness(
                health, service_names, readiness, interval=settings.readiness_interval_seconds
            )
        )
        if readiness is not None
        else None
    )
    await stopping.wait()
    if probe is not None:
        probe.cancel()

    log.info("shutting down: draining for up to %.1fs", settings.shutdown_grace_seconds)
    # Callers and load balancers see NOT_SERVING before the port closes.
    await health.enter_graceful_shutdown()

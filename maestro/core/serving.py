"""Serving bootstrap shared by every service.

One place does what every server needs: the interceptor (authentication, per-client
limits, undecodable requests, error mapping with status details, request ids in log
context), health (NOT_SERVING until ready and again while draining), reflection (v1
and v1alpha), TLS when configured, the port file for local stacks, and graceful
shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from maestro.core.auth import AuthConfigError, Authenticator, service_authenticator
from maestro.core.client import MAX_MESSAGE_BYTES, server_options
from maestro.core.interceptor import ServingInterceptor
from maestro.core.lifecycle import exit_with_parent
from maestro.core.limits import ClientLimits
from maestro.core.observability import server_interceptors
from maestro.core.reflection import enable_reflection
from maestro.core.settings import ServiceSettings

log = logging.getLogger(__name__)

# The interceptor without authentication or limits maps errors only: what a test of a
# bare servicer needs (the name it had before authentication existed).
ErrorInterceptor = ServingInterceptor

SERVING = health_pb2.HealthCheckResponse.SERVING
LIVENESS = "maestro.liveness"
"""The health service name a liveness probe asks (SERVING until the service stops)."""
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate chain and its private key, PEM files."""

    cert_file: Path
    key_file: Path

    def credentials(self) -> grpc.ServerCredentials:
        """Reads both files.

        Raises:
            SystemExit: a file cannot be read.
        """
        try:
            cert = self.cert_file.read_bytes()
            key = self.key_file.read_bytes()
        except OSError as err:
            raise SystemExit(f"cannot read the TLS certificate or key: {err}") from None
        return grpc.ssl_server_credentials([(key, cert)])


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
    """Writes the port atomically, so a reader never sees a half-written number.

    Mode 0600 whatever the umask: it sits in a data directory that is private.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(str(port))
    os.chmod(tmp, 0o600)  # an older file of the same name keeps its mode otherwise
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
    authenticator: Authenticator | None = None,
    limits: ClientLimits | None = None,
    max_receive_bytes: int = MAX_MESSAGE_BYTES,
    tls: TlsFiles | None = None,
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
        authenticator: who may call; default: the Maestro services listed in
            MAESTRO_SERVICE_CALLERS (see maestro.core.auth).
        limits: per-client request rate and stream limits; default none.
        max_receive_bytes: the largest request accepted.
        tls: serve TLS with this certificate; default plaintext.

    Raises:
        SystemExit: the configuration cannot work (auth, TLS, the address).
    """
    if authenticator is None:
        try:
            authenticator = service_authenticator(service_names[0] if service_names else "")
        except AuthConfigError as err:
            raise SystemExit(f"cannot start: {err}") from None
    server = grpc.aio.server(
        interceptors=[*server_interceptors(), ServingInterceptor(authenticator, limits)],
        options=server_options(max_receive_bytes),
    )
    try:
        await _serve_until_signalled(
            server, settings, service_names, register, readiness, on_serving, tls
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
    tls: TlsFiles | None,
) -> None:
    health = HealthServicer()
    # Not ready until every registration finished and the port is bound.
    await health.set("", NOT_SERVING)
    # Liveness says only that the process answers: a database outage makes a service
    # NOT_SERVING (not ready), and restarting it would not bring the database back.
    await health.set(LIVENESS, SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    register(server)
    enable_reflection(server, service_names)
    address = f"{settings.host}:{settings.port}"
    try:
        if tls is not None:
            port = server.add_secure_port(address, tls.credentials())
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as err:
        raise SystemExit(f"cannot listen on {address}: {err}") from None
    # Most of what is alive now (modules, descriptors, schemas, settings) lives as long
    # as the process. Frozen, full collections stop walking it: they paused a busy
    # service for 20-35 ms at a time, 4-6 ms frozen. Objects frozen here are still
    # freed when their last reference goes; only a cycle among them would be kept, and
    # a collection now would find 5-50 such objects for 30 ms of every start.
    gc.freeze()
    await server.start()
    for name in ("", *service_names):
        await health.set(name, SERVING)
    if settings.port_file is not None:
        write_port_file(settings.port_file, port)
    log.info(
        "serving %s on %s:%d (%s)",
        ", ".join(service_names),
        settings.host,
        port,
        "TLS" if tls is not None else "plaintext",
    )
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

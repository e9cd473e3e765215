"""Client side of every gRPC hop: channels with sane limits and credentials, and status
codes mapped back into the MaestroError family (the mirror of the server interceptor).

Every channel this module opens presents a bearer token: the one given, else this
process's service token (MAESTRO_SERVICE_TOKEN), so the scheduler's and the gateway's
clients of other services authenticate without knowing it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from maestro.core.auth import AUTHORIZATION, service_token
from maestro.core.errors import Code, MaestroError, Unavailable
from maestro.core.status import details_from_trailers, error_from_status

# Internal hops: artifacts are capped at 1 MiB each, but a step result carries many
# files. The public gateway receives far less (see its settings).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Keepalive must agree on both ends: a client that pings more often than its server
# permits gets GOAWAY "too_many_pings" on a long, quiet stream. Every Maestro client
# and server reads the same interval, so shortening it (tests) keeps them in step.
KEEPALIVE_ENV = "MAESTRO_GRPC_KEEPALIVE_SECONDS"
DEFAULT_KEEPALIVE_SECONDS = 30.0


def keepalive_seconds() -> float:
    """The clients' ping interval on idle connections (MAESTRO_GRPC_KEEPALIVE_SECONDS)."""
    raw = os.environ.get(KEEPALIVE_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_KEEPALIVE_SECONDS
    except ValueError:
        value = DEFAULT_KEEPALIVE_SECONDS
    return value if math.isfinite(value) and value >= 0.1 else DEFAULT_KEEPALIVE_SECONDS


def channel_options() -> list[tuple[str, int | str]]:
    """Options of every client channel: message limits and keepalive pings."""
    interval_ms = round(keepalive_seconds() * 1000)
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Notice a dead peer on a long, quiet stream instead of waiting forever.
        ("grpc.keepalive_time_ms", interval_ms),
        ("grpc.keepalive_timeout_ms", max(1000, min(interval_ms, 10_000))),
        ("grpc.keepalive_permit_without_calls", 1),
        # Keep pinging however long a stream stays quiet (the default stops after 2).
        ("grpc.http2.max_pings_without_data", 0),
        # Try a refused connection again every 2 s at most (plus gRPC's 20% jitter), so
        # a service that was down is reached soon after it is back. gRPC's default backs
        # off from 1 s to 2 minutes, and every call fails fast until it retries: a
        # gateway started a moment before its scheduler missed its change feed (and
        # streamed events a second late) for the first seconds of every `maestro up`.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


MAX_CONNECTION_AGE_MS = 120_000


def server_options(max_receive_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options of every server: message limits, and permission for our clients' pings.

    Args:
        max_receive_bytes: the largest request accepted; larger ones are refused with
            RESOURCE_EXHAUSTED by gRPC itself, before any handler sees them.
    """
    interval_ms = round(keepalive_seconds() * 1000)
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", max_receive_bytes),
        # Accept pings at half the clients' interval, so jitter never counts as abuse.
        ("grpc.http2.min_ping_interval_without_data_ms", interval_ms // 2),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients reconnect now and then, and so look the service's name up again: new
        # pods of a scaled-up pool get calls. Calls in flight finish on the old
        # connection (no grace limit is set), however long a step takes.
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        # gRPC lets two servers bind one port by default, and a client then reaches
        # either; a port in use must be refused instead.
        ("grpc.so_reuseport", 0),
    ]


class _WithToken:
    """A multi-callable that adds `authorization: Bearer <token>` to each call's metadata.

    Added per call rather than by a client interceptor: grpc.aio runs a channel with
    any interceptor through an extra task and wrapper objects for every call, which
    cost the scheduler a tenth of its event loop on no-op steps (bench/RESULTS.md).
    """

    def __init__(self, call: Any, entry: tuple[str, str]) -> None:
        self._call = call
        self._entry = entry

    def __call__(self, request: Any = None, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        return self._call(request, *args, metadata=(*(metadata or ()), self._entry), **kwargs)


class _TokenChannel(grpc.aio.Channel):
    """A channel whose every call presents a bearer token (the rest is the channel's)."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self._channel = channel
        self._entry = (AUTHORIZATION, f"Bearer {token}")

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _WithToken(self._channel.unary_unary(*args, **kwargs), self._entry)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _WithToken(self._channel.unary_stream(*args, **kwargs), self._entry)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _WithToken(self._channel.stream_unary(*args, **kwargs), self._entry)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _WithToken(self._channel.stream_stream(*args, **kwargs), self._entry)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def __aenter__(self) -> _TokenChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(None)


def _with_token(channel: grpc.aio.Channel, token: str | None) -> grpc.aio.Channel:
    token = token or service_token()
    return _TokenChannel(channel, token) if token else channel


def insecure_channel(
    address: str, *, round_robin: bool = False, token: str | None = None
) -> grpc.aio.Channel:
    """Opens a plaintext channel (loopback and in-cluster traffic).

    Args:
        address: host:port, or a resolver target such as dns:///name:port.
        round_robin: spread calls over every address the name resolves to (the pods
            behind a headless Service) instead of gRPC's default of sticking to one.
        token: the bearer token to present; default: this process's service token
            (MAESTRO_SERVICE_TOKEN), if it has one.
    """
    options = channel_options()
    if round_robin:
        options.append(("grpc.lb_policy_name", "round_robin"))
    return _with_token(grpc.aio.insecure_channel(address, options=options), token)


def secure_channel(
    address: str, *, token: str | None = None, root_certificates: bytes | None = None
) -> grpc.aio.Channel:
    """Opens a TLS channel.

    Args:
        address: `host:port`; the host must match the server certificate.
        token: as for `insecure_channel`.
        root_certificates: PEM of the CAs to trust; None trusts the system's.
    """
    credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    return _with_token(
        grpc.aio.secure_channel(address, credentials, options=channel_options()), token
    )


def error_from_rpc(err: grpc.aio.AioRpcError, peer: str = "") -> MaestroError:
    """Turns a failed call back into the MaestroError the server raised.

    The status details (RetryInfo, BadRequest, ErrorInfo, ResourceInfo) come back as
    the error's retry_after, violations, error_reason and resource.
    """
    message = err.details() or err.code().name
    try:
        code = Code(err.code().name)
    except ValueError:
        code = Code.INTERNAL
    # At run time these are (key, value) pairs; the type stubs say otherwise.
    trailers: Any = err.trailing_metadata() or ()
    details = details_from_trailers(trailers)
    if code is Code.UNAVAILABLE and peer:
        return Unavailable(
            f"{peer} is unavailable: {message}",
            retry_after=details.retry_after,
            error_reason=details.error_reason,
        )
    return error_from_status(code, message, details)


@contextmanager
def mapped_rpc_errors(peer: str = "") -> Iterator[None]:
    """Re-raises any AioRpcError inside the block as a MaestroError."""
    try:
        yield
    except grpc.aio.AioRpcError as err:
        raise error_from_rpc(err, peer) from err

"""Client side of every gRPC hop: channels with sane limits, and status codes mapped
back into the MaestroError family (the mirror of the server interceptor)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from maestro.core.errors import Code, MaestroError, Unavailable, error_for_code

# Artifacts are capped at 1 MiB each, but a step result carries many files.
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
    ]


def server_options() -> list[tuple[str, int]]:
    """Options of every server: message limits, and permission for our clients' pings."""
    interval_ms = round(keepalive_seconds() * 1000)
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Accept pings at half the clients' interval, so jitter never counts as abuse.
        ("grpc.http2.min_ping_interval_without_data_ms", interval_ms // 2),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def insecure_channel(address: str, *, round_robin: bool = False) -> grpc.aio.Channel:
    """Opens a plaintext channel (loopback and in-cluster traffic).

    Args:
        address: host:port, or a resolver target such as dns:///name:port.
        round_robin: spread calls over every address the name resolves to (the pods
            behind a headless Service) instead of gRPC's default of sticking to one.
    """
    options = channel_options()
    if round_robin:
        options.append(("grpc.lb_policy_name", "round_robin"))
    return grpc.aio.insecure_channel(address, options=options)


# Trailing metadata with the server's "wait this long before retrying", in milliseconds.
RETRY_AFTER_METADATA = "retry-after-ms"


def _retry_after(err: grpc.aio.AioRpcError) -> float | None:
    # At run time these are (key, value) pairs; the type stubs say otherwise.
    pairs: Any = err.trailing_metadata() or ()
    for key, value in pairs:
        if key == RETRY_AFTER_METADATA and isinstance(value, str) and value.isdigit():
            return int(value) / 1000
    return None


def error_from_rpc(err: grpc.aio.AioRpcError, peer: str = "") -> MaestroError:
    """Turns a failed call back into the MaestroError the server raised."""
    details = err.details() or err.code().name
    try:
        code = Code(err.code().name)
    except ValueError:
        code = Code.INTERNAL
    retry_after = _retry_after(err)
    if code is Code.UNAVAILABLE and peer:
        return Unavailable(f"{peer} is unavailable: {details}", retry_after=retry_after)
    return error_for_code(code, details, retry_after)


@contextmanager
def mapped_rpc_errors(peer: str = "") -> Iterator[None]:
    """Re-raises any AioRpcError inside the block as a MaestroError."""
    try:
        yield
    except grpc.aio.AioRpcError as err:
        raise error_from_rpc(err, peer) from err

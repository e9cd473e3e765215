"""Errors on the wire (AIP-193): `google.rpc.Status` with details, in both directions.

Every error a Maestro server sends carries, in the `grpc-status-details-bin` trailer:

- `ErrorInfo` with a stable UPPER_SNAKE_CASE `reason` and the domain `maestro`;
- `BadRequest` with one field violation per problem (INVALID_ARGUMENT);
- `RetryInfo` when the caller should wait before retrying;
- `ResourceInfo` when the error is about one resource (NOT_FOUND).

Messages and details are bounded and valid UTF-8 whatever the error holds: status
trailers share the client's metadata limit (8 KiB by default), and a message that
cannot be encoded would leave the caller waiting for its deadline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from maestro.core.errors import Code, MaestroError, Resource, error_for_code
from maestro.text import escape_unprintable

DETAILS_METADATA_KEY = "grpc-status-details-bin"
ERROR_DOMAIN = "maestro"
# UTF-8 bytes of the status message; percent-encoding may triple it on the wire.
MAX_MESSAGE_BYTES = 1024
# The serialized Status (message and details); base64 makes it a third larger. With
# the message's own trailer, an error stays under 6 KiB of metadata.
MAX_STATUS_BYTES = 2048
MAX_VIOLATIONS = 20
MAX_DESCRIPTION_CHARS = 300


def safe_text(text: str, max_bytes: int) -> str:
    """`text` with unprintable characters escaped, cut to at most `max_bytes` in UTF-8."""
    clean = escape_unprintable(text)
    encoded = clean.encode("utf-8")
    if len(encoded) <= max_bytes:
        return clean
    return encoded[: max_bytes - 3].decode("utf-8", "ignore") + "…"


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_for(err: MaestroError, message: str | None = None) -> status_pb2.Status:
    """The `google.rpc.Status` a server sends for a MaestroError.

    Args:
        err: the error.
        message: overrides `err.message` (the generic text of an INTERNAL error).
    """
    status = status_pb2.Status(
        code=code_pb2.Code.Value(err.code.value),
        message=safe_text(message if message is not None else err.message, MAX_MESSAGE_BYTES),
    )
    info = error_details_pb2.ErrorInfo(reason=safe_text(err.error_reason, 63), domain=ERROR_DOMAIN)
    for key, value in list(err.metadata.items())[:8]:
        info.metadata[safe_text(key, 64)] = safe_text(value, 200)
    details: list[Any] = [info]
    if err.retry_after is not None and math.isfinite(err.retry_after) and err.retry_after >= 0:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(round(min(err.retry_after, 86_400.0) * 1000))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if err.resource is not None:
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=safe_text(err.resource.type, 200),
                resource_name=safe_text(err.resource.name, 300),
            )
        )
    for detail in details:
        status.details.append(_packed(detail))
    if err.violations:
        # As many field violations as fit the budget, the first ones first.
        request = error_details_pb2.BadRequest()
        base = status.ByteSize()
        for field, reason in err.violations[:MAX_VIOLATIONS]:
            request.field_violations.add(
                field=safe_text(field, 200), description=safe_text(reason, MAX_DESCRIPTION_CHARS)
            )
            if base + request.ByteSize() + 8 > MAX_STATUS_BYTES:
                del request.field_violations[-1]
                break
        status.details.append(_packed(request))
    return status


@dataclass(frozen=True)
class StatusDetails:
    """What a client reads back from an error's details."""

    error_reason: str | None = None
    retry_after: float | None = None
    resource: Resource | None = None
    violations: tuple[tuple[str, str], ...] = ()


def details_from_trailers(trailers: Iterable[tuple[str, Any]]) -> StatusDetails:
    """Reads the details a server put in `grpc-status-details-bin`, if any.

    Never raises: a client must not fail on a peer's malformed details.
    """
    raw = next(
        (
            value
            for key, value in trailers
            if key == DETAILS_METADATA_KEY and isinstance(value, bytes)
        ),
        None,
    )
    if raw is None:
        return StatusDetails()
    try:
        status = status_pb2.Status.FromString(raw)
    except Exception:  # DecodeError, or anything a corrupt message makes the parser raise
        return StatusDetails()
    reason: str | None = None
    retry_after: float | None = None
    resource: Resource | None = None
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason or None
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToMilliseconds() / 1000
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            info_r = error_details_pb2.ResourceInfo()
            detail.Unpack(info_r)
            resource = Resource(info_r.resource_type, info_r.resource_name)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    return StatusDetails(reason, retry_after, resource, tuple(violations))


def error_from_status(code: Code, message: str, details: StatusDetails) -> MaestroError:
    """Rebuilds the MaestroError a server raised from its status."""
    return error_for_code(
        code,
        message,
        details.retry_after,
        error_reason=details.error_reason,
        resource=details.resource,
        violations=details.violations,
    )


__all__ = [
    "DETAILS_METADATA_KEY",
    "ERROR_DOMAIN",
    "StatusDetails",
    "details_from_trailers",
    "error_from_status",
    "safe_text",
    "status_for",
]

"""The root of every service's exception family.

Domain code raises these without importing grpc; one server interceptor per service
(`maestro.core.serving`) turns them into status codes, and `maestro.core.client`
turns status codes back into them. Anything that is not a MaestroError is a bug: it
becomes INTERNAL with a generic message while the traceback goes to the log.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    """The gRPC status codes Maestro uses, by name (see grpc.StatusCode)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


class MaestroError(Exception):
    """An expected failure whose message is safe to show to the caller."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Seconds the failing party asked us to wait before trying again (for example
        # an API's retry-after); travels as `retry-after-ms` trailing metadata.
        self.retry_after = retry_after


class InvalidArgument(MaestroError):
    """Bad input. The message names the field and the reason."""

    code = Code.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class NotFound(MaestroError):
    code = Code.NOT_FOUND


class AlreadyExists(MaestroError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(MaestroError):
    code = Code.FAILED_PRECONDITION


class ResourceExhausted(MaestroError):
    code = Code.RESOURCE_EXHAUSTED


class Unavailable(MaestroError):
    code = Code.UNAVAILABLE


class DeadlineExceeded(MaestroError):
    code = Code.DEADLINE_EXCEEDED


class Cancelled(MaestroError):
    code = Code.CANCELLED


class Internal(MaestroError):
    """A known internal failure whose message is still safe to show."""

    code = Code.INTERNAL


_BY_CODE: dict[Code, type[MaestroError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Internal,
    )
}


def error_for_code(code: Code, message: str, retry_after: float | None = None) -> MaestroError:
    """Rebuilds a MaestroError from a status code and message (client side)."""
    if code is Code.INVALID_ARGUMENT:
        field, sep, reason = message.partition(": ")
        return InvalidArgument(field, reason) if sep else InvalidArgument("", message)
    cls = _BY_CODE.get(code)
    if cls is None:
        err = MaestroError(message, retry_after=retry_after)
        err.code = code
        return err
    return cls(message, retry_after=retry_after)


# Codes worth another attempt: the failure may not repeat.
RETRYABLE_CODES = frozenset(
    {Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED, Code.DEADLINE_EXCEEDED, Code.INTERNAL}
)

"""The root of every service's exception family.

Domain code raises these without importing grpc; one server interceptor per service
(`maestro.core.serving`) turns them into status codes with `google.rpc.Status`
details (AIP-193: ErrorInfo with a stable reason, BadRequest field violations,
RetryInfo, ResourceInfo), and `maestro.core.client` turns them back. Anything that is
not a MaestroError is a bug: it becomes INTERNAL with a generic message while the
traceback goes to the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Resource:
    """The resource an error is about (ResourceInfo on the wire)."""

    type: str
    """For example `maestro.api.gateway.v1.Run`."""
    name: str
    """For example `runs/0123456789abcdef`."""


class MaestroError(Exception):
    """An expected failure whose message is safe to show to the caller.

    Attributes:
        message: Safe to show; names the field, resource or reason.
        retry_after: Seconds the failing party asked callers to wait before trying
            again (an API's retry-after, a rate limit); travels as RetryInfo.
        error_reason: A stable UPPER_SNAKE_CASE reason (ErrorInfo.reason); clients
            may branch on it. Defaults to the class's, else the code's name.
        resource: What the error is about, if it is about one resource.
        metadata: Extra ErrorInfo metadata (short strings).
    """

    code: Code = Code.INTERNAL
    reason_code: str = ""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        error_reason: str | None = None,
        resource: Resource | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.error_reason = error_reason or self.reason_code or self.code.value
        self.resource = resource
        self.metadata = dict(metadata or {})

    @property
    def violations(self) -> tuple[tuple[str, str], ...]:
        """(field, reason) pairs of bad input; empty for other errors."""
        return ()


class InvalidArgument(MaestroError):
    """Bad input. The message names the field and the reason."""

    code = Code.INVALID_ARGUMENT

    def __init__(
        self,
        field: str,
        reason: str,
        *,
        violations: Iterable[tuple[str, str]] | None = None,
        error_reason: str | None = None,
    ) -> None:
        """Args: field, reason: the (first) problem; violations: every problem, when
        there are several (a workflow's); error_reason: see MaestroError."""
        super().__init__(f"{field}: {reason}" if field else reason, error_reason=error_reason)
        self.field = field
        self.reason = reason
        self._violations = tuple(violations) if violations is not None else None

    @property
    def violations(self) -> tuple[tuple[str, str], ...]:
        if self._violations is not None:
            return self._violations
        return ((self.field, self.reason),)


class NotFound(MaestroError):
    code = Code.NOT_FOUND


class Unauthenticated(MaestroError):
    """No credentials, or credentials that match nobody."""

    code = Code.UNAUTHENTICATED


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
        Unauthenticated,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Internal,
    )
}


def error_for_code(
    code: Code,
    message: str,
    retry_after: float | None = None,
    *,
    error_reason: str | None = None,
    resource: Resource | None = None,
    violations: Iterable[tuple[str, str]] = (),
) -> MaestroError:
    """Rebuilds a MaestroError from a status code, message and details (client side)."""
    if code is Code.INVALID_ARGUMENT:
        found = tuple(violations)
        field, sep, reason = message.partition(": ")
        if found and (not sep or field != found[0][0]):
            field, reason = found[0][0], message
        elif not sep:
            field, reason = "", message
        return InvalidArgument(field, reason, violations=found or None, error_reason=error_reason)
    cls = _BY_CODE.get(code, MaestroError)
    err = cls(message, retry_after=retry_after, error_reason=error_reason, resource=resource)
    if cls is MaestroError:
        err.code = code
        err.error_reason = error_reason or code.value
    return err


# Codes worth another attempt: the failure may not repeat.
RETRYABLE_CODES = frozenset(
    {Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED, Code.DEADLINE_EXCEEDED, Code.INTERNAL}
)

"""Proto <-> domain for the sandbox API: requests are checked here, with the field and
the reason of whatever is wrong. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from maestro.api.sandbox.v1 import sandbox_pb2
from maestro.core.errors import InvalidArgument
from maestro.paths import BadPath, normalize_artifact_path
from maestro.sandbox.convert import report_to_proto
from maestro.sandbox.models import CheckName, CheckReport, CheckRequest, SandboxFile

__all__ = ["RequestLimits", "report_to_proto", "request_from_proto", "report_response"]

_CHECK_NAMES = ", ".join(c.value for c in CheckName)
_MAX_LABEL = 200


@dataclass(frozen=True)
class RequestLimits:
    """What one request may carry."""

    max_files: int
    max_file_bytes: int
    max_total_bytes: int


def _files(request: sandbox_pb2.RunChecksRequest, limits: RequestLimits) -> tuple[SandboxFile, ...]:
    if len(request.files) > limits.max_files:
        raise InvalidArgument(
            "files", f"{len(request.files)} files; at most {limits.max_files} are allowed"
        )
    files: list[SandboxFile] = []
    seen: set[str] = set()
    total = 0
    for index, file in enumerate(request.files):
        field = f"files[{index}]"
        try:
            path = normalize_artifact_path(file.path)
        except BadPath as err:
            raise InvalidArgument(f"{field}.path", str(err)) from None
        if path in seen:
            raise InvalidArgument(f"{field}.path", f"{path!r} appears twice")
        seen.add(path)
        if len(file.content) > limits.max_file_bytes:
            raise InvalidArgument(
                f"{field}.content",
                f"{path!r} is {len(file.content)} bytes; the limit is {limits.max_file_bytes}",
            )
        total += len(file.content)
        if total > limits.max_total_bytes:
            raise InvalidArgument("files", f"more than {limits.max_total_bytes} bytes in total")
        files.append(SandboxFile(path=path, content=file.content))
    for path in seen:
        parent = path.rpartition("/")[0]
        while parent:
            if parent in seen:
                raise InvalidArgument("files", f"{parent!r} is a file and a directory of {path!r}")
            parent = parent.rpartition("/")[0]
    return tuple(files)


def _checks(request: sandbox_pb2.RunChecksRequest) -> tuple[CheckName, ...]:
    if not request.checks:
        raise InvalidArgument("checks", f"at least one check is needed ({_CHECK_NAMES})")
    checks: list[CheckName] = []
    for index, name in enumerate(request.checks):
        try:
            check = CheckName(name)
        except ValueError:
            raise InvalidArgument(
                f"checks[{index}]", f"unknown check {name!r}; expected one of {_CHECK_NAMES}"
            ) from None
        if check in checks:
            raise InvalidArgument(f"checks[{index}]", f"{name!r} is requested twice")
        checks.append(check)
    return tuple(checks)


def request_from_proto(
    request: sandbox_pb2.RunChecksRequest, limits: RequestLimits
) -> CheckRequest:
    """Checks a request and returns it as a model.

    Raises:
        InvalidArgument: a bad, duplicate or oversized file, too many files, no check,
            an unknown or repeated check, an overlong label.
    """
    if len(request.label) > _MAX_LABEL:
        raise InvalidArgument("label", f"longer than {_MAX_LABEL} characters")
    return CheckRequest(
        files=_files(request, limits),
        checks=_checks(request),
        coverage=request.options.coverage,
        label=request.label,
    )


def report_response(report: CheckReport) -> sandbox_pb2.RunChecksResponse:
    return sandbox_pb2.RunChecksResponse(report=report_to_proto(report))

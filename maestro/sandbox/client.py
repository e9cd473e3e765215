"""Calls the sandbox: one RunChecks stream per check run, with a deadline and a
heartbeat watchdog. Status codes come back as the MaestroError family."""

from __future__ import annotations

import asyncio
from types import TracebackType

import grpc

from maestro.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from maestro.core.client import insecure_channel, mapped_rpc_errors
from maestro.core.errors import DeadlineExceeded, Internal, Unavailable
from maestro.sandbox.convert import report_from_proto, request_to_proto
from maestro.sandbox.models import CheckReport, CheckRequest

# grpc.aio's end-of-stream sentinel (missing from the type stubs).
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]

DEFAULT_HEARTBEAT_TIMEOUT_SECONDS = 30.0


class SandboxLost(Unavailable):
    """The sandbox went silent for longer than the heartbeat timeout."""


class SandboxClient:
    """A channel to the sandbox service (one address: a process or a Kubernetes Service).

    Use as `async with SandboxClient(address) as sandbox:` or call `close()`.
    """

    def __init__(
        self, address: str, *, heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS
    ) -> None:
        self._address = address
        self._channel = insecure_channel(address)
        self._stub = sandbox_pb2_grpc.SandboxServiceStub(self._channel)
        self._heartbeat_timeout = heartbeat_timeout

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def run_checks(self, request: CheckRequest, *, timeout: float) -> CheckReport:
        """Runs the checks in the sandbox and returns its report.

        A check that crashed, timed out or hit a limit is in the report (its outcome
        and reason), not raised; judge the report with `maestro.sandbox.gate.evaluate`.

        Args:
            request: The workspace and the checks.
            timeout: The whole run's deadline, in seconds (sent to the sandbox).

        Raises:
            InvalidArgument: the request is bad (the field and the reason).
            FailedPrecondition: the sandbox cannot isolate generated code.
            Unavailable: the sandbox is down or its jail broke; SandboxLost when it
                went silent.
            DeadlineExceeded: past `timeout`.
            MaestroError: any other status, mapped from its code.
        """
        call = self._stub.RunChecks(
            request_to_proto(request),
            timeout=timeout,
            metadata=(("x-request-id", request.label),) if request.label else None,
        )
        try:
            with mapped_rpc_errors(f"sandbox {self._address}"):
                while True:
                    try:
                        # Not wait_for, which can swallow a cancellation on Python 3.11.
                        async with asyncio.timeout(self._heartbeat_timeout):
                            message = await call.read()
                    except TimeoutError:
                        raise SandboxLost(
                            f"sandbox {self._address} sent nothing for "
                            f"{self._heartbeat_timeout:.0f}s"
                        ) from None
                    if message is EOF:
                        raise Internal("the sandbox ended the stream without a report")
                    assert isinstance(message, sandbox_pb2.RunChecksResponse)
                    if message.WhichOneof("kind") == "report":
                        return report_from_proto(message.report)
        except DeadlineExceeded as err:
            raise DeadlineExceeded(f"the checks timed out after {timeout:.0f}s") from err
        finally:
            # Cancels the run on the sandbox too when we leave early (lost, cancelled).
            call.cancel()

"""A thin async client of the public gateway API for the command line.

Every unary call carries a timeout; every failure comes back as a MaestroError (via
`maestro.core.client.mapped_rpc_errors`); results are the plain models of
`maestro.cli.models`. Event streams have no deadline, since a run may take a long
time, but `follow_events` reconnects when the connection drops and gives up after a
bounded number of attempts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from types import TracebackType
from typing import TypeVar

import grpc

from maestro.api.gateway.v1 import gateway_pb2 as pb
from maestro.api.gateway.v1 import gateway_pb2_grpc
from maestro.cli.convert import (
    artifact_from_proto,
    event_from_proto,
    run_from_proto,
    step_from_proto,
)
from maestro.cli.models import ArtifactView, EventView, RunView, StepView, run_name
from maestro.core.client import insecure_channel, mapped_rpc_errors, secure_channel
from maestro.core.errors import DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_TIMEOUT_SECONDS = 10.0
# Reconnects allowed in a row without receiving an event in between.
DEFAULT_MAX_RECONNECTS = 8
_BACKOFF_FIRST_SECONDS = 0.25
_BACKOFF_MAX_SECONDS = 4.0
# CreateRun, ApproveStep and RejectStep are retried with their request_id this many
# times when the gateway or the scheduler cannot answer (about 15 s in all with the
# backoff).
REQUEST_RETRIES = 5


class StreamEnded(Unavailable):
    """The event stream kept failing, or ended before the run's terminal event."""


class GatewayClient:
    """Calls the gateway at one address. Use as `async with GatewayClient(addr) as c:`."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        """Opens a channel lazily; nothing connects until the first call.

        Args:
            address: `host:port` of the gateway.
            token: The bearer token every call presents.
            tls: Use TLS (implied by `root_certificates`).
            root_certificates: PEM of the CAs to trust; None trusts the system's.
            timeout: Deadline in seconds for each unary call.
        """
        self.address = address
        self.timeout = timeout
        if tls or root_certificates is not None:
            self._channel = secure_channel(
                address, token=token, root_certificates=root_certificates
            )
        else:
            self._channel = insecure_channel(address, token=token)
        self._stub = gateway_pb2_grpc.MaestroServiceStub(self._channel)
        self._batches = True
        """False once the gateway did not know StreamRunEventBatches (an older one)."""

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel, cancelling any call still in flight."""
        await self._channel.close(None)

    async def create_run(
        self,
        *,
        requirement: str,
        workflow_name: str | None = None,
        workflow_yaml: str | None = None,
        provider: str = "",
        request_id: str = "",
    ) -> RunView:
        """Creates a run from a built-in workflow name or a YAML spec; returns at once."""
        request = pb.CreateRunRequest(
            requirement=requirement, provider=provider, request_id=request_id
        )
        if workflow_yaml is not None:
            request.workflow_yaml = workflow_yaml
        elif workflow_name is not None:
            request.workflow_name = workflow_name
        run: pb.Run = await self._retried(
            "CreateRun",
            request_id,
            lambda: self._stub.CreateRun(request, timeout=self.timeout),
        )
        return run_from_proto(run)

    async def _retried(self, what: str, request_id: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Calls `call`, again with the same request_id while the gateway or the
        scheduler cannot answer (a restart): what a request did after we stopped
        waiting is found and returned, never done twice (and never left unknown)."""
        delay = _BACKOFF_FIRST_SECONDS
        for tries_left in range(REQUEST_RETRIES, -1, -1):
            try:
                with mapped_rpc_errors():
                    return await call()
            except (Unavailable, DeadlineExceeded) as err:
                if not request_id or tries_left == 0:
                    raise
                log.info("%s: %s; trying again in %.2fs", what, err.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_SECONDS)
        raise AssertionError("unreachable")

    async def get_run(self, run: str) -> RunView:
        """Gets a run by id or name."""
        request = pb.GetRunRequest(name=run_name(run))
        with mapped_rpc_errors():
            result: pb.Run = await self._stub.GetRun(request, timeout=self.timeout)
        return run_from_proto(result)

    async def list_runs(
        self, *, page_size: int = 0, page_token: str = "", waiting_for_decision: bool = False
    ) -> tuple[list[RunView], str]:
        """Lists one page of runs, newest first; returns the runs and the next token."""
        request = pb.ListRunsRequest(
            page_size=page_size,
            page_token=page_token,
            waiting_for_decision=waiting_for_decision,
        )
        with mapped_rpc_errors():
            page: pb.ListRunsResponse = await self._stub.ListRuns(request, timeout=self.timeout)
        return [run_from_proto(r) for r in page.runs], page.next_page_token

    async def get_capacity(self) -> pb.Capacity:
        """The model capacity the answering scheduler holds calls to."""
        with mapped_rpc_errors():
            answer: pb.Capacity = await self._stub.GetCapacity(
                pb.GetCapacityRequest(), timeout=self.timeout
            )
        return answer

    async def decide_step(
        self, run: str, step: str, *, approve: bool, comment: str, request_id: str
    ) -> StepView:
        """Approves or rejects a step that waits for a decision; returns the step."""
        name = f"{run_name(run)}/steps/{step}"

        def call() -> Awaitable[pb.Step]:
            if approve:
                return self._stub.ApproveStep(
                    pb.ApproveStepRequest(name=name, comment=comment, request_id=request_id),
                    timeout=self.timeout,
                )
            return self._stub.RejectStep(
                pb.RejectStepRequest(name=name, comment=comment, request_id=request_id),
                timeout=self.timeout,
            )

        # Retried like CreateRun: a decision made while the scheduler restarts is
        # recorded once it is back (the request_id makes the retry the same decision).
        result = await self._retried("ApproveStep" if approve else "RejectStep", request_id, call)
        return step_from_proto(result)

    async def cancel_run(self, run: str) -> RunView:
        """Asks the gateway to cancel a run; returns the run as it is right after."""
        request = pb.CancelRunRequest(name=run_name(run))
        with mapped_rpc_errors():
            result: pb.Run = await self._stub.CancelRun(request, timeout=self.timeout)
        return run_from_proto(result)

    async def delete_run(self, run: str) -> None:
        """Deletes a finished run with its events and artifacts."""
        request = pb.DeleteRunRequest(name=run_name(run))
        with mapped_rpc_errors():
            await self._stub.DeleteRun(request, timeout=self.timeout)

    async def list_artifacts_page(
        self, run: str, *, page_token: str = "", page_size: int = 0, all_versions: bool = False
    ) -> tuple[list[ArtifactView], str]:
        """One page of a run's artifacts (without content), and the next page's token."""
        request = pb.ListArtifactsRequest(
            parent=run_name(run),
            page_token=page_token,
            page_size=page_size,
            all_versions=all_versions,
        )
        with mapped_rpc_errors():
            result: pb.ListArtifactsResponse = await self._stub.ListArtifacts(
                request, timeout=self.timeout
            )
        return [artifact_from_proto(a) for a in result.artifacts], result.next_page_token

    async def list_artifacts(self, run: str, *, all_versions: bool = False) -> list[ArtifactView]:
        """Lists all of a run's artifacts (the latest of each path, or every version),
        without their content, page by page."""
        listed: list[ArtifactView] = []
        token = ""
        while True:
            page, token = await self.list_artifacts_page(
                run, page_token=token, all_versions=all_versions
            )
            listed.extend(page)
            if not token:
                return listed

    async def get_artifact(self, name: str) -> ArtifactView:
        """Gets one artifact, by its full name `runs/{run}/artifacts/{path}`, with content."""
        request = pb.GetArtifactRequest(name=name)
        with mapped_rpc_errors():
            result: pb.Artifact = await self._stub.GetArtifact(request, timeout=self.timeout)
        return artifact_from_proto(result)

    async def stream_events(
        self, run: str, *, after_sequence: int = 0
    ) -> AsyncGenerator[EventView, None]:
        """One event stream, without reconnecting: stored events, then live ones.

        Ends after the run's terminal event (the server closes the stream then). Events
        come in batches (StreamRunEventBatches: a fast run costs a message per batch,
        not per event), or one by one from a gateway older than that call.
        """
        request = pb.StreamRunEventsRequest(name=run_name(run), after_sequence=after_sequence)
        if self._batches:
            batches = self._stub.StreamRunEventBatches(request)
            try:
                with mapped_rpc_errors():
                    try:
                        async for batch in batches:
                            for event in batch.events:
                                yield event_from_proto(event)
                        return
                    except grpc.aio.AioRpcError as err:
                        # Nothing came yet: UNIMPLEMENTED is the call's first answer.
                        if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                            raise
                        self._batches = False
            finally:
                # Leaving early (terminal event seen, Ctrl-C) must not leave it open.
                batches.cancel()
        call = self._stub.StreamRunEvents(request)
        try:
            with mapped_rpc_errors():
                async for event in call:
                    yield event_from_proto(event)
        finally:
            call.cancel()

    async def follow_events(
        self,
        run: str,
        *,
        after_sequence: int = 0,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
    ) -> AsyncGenerator[EventView, None]:
        """Follows a run's events until its terminal event, reconnecting as needed.

        A stream that breaks with UNAVAILABLE, or ends before the terminal event, is
        reopened from the last sequence seen, so nothing is lost or repeated. The
        server already guarantees that; the sequence check here makes a duplicate
        harmless anyway.

        Raises:
            StreamEnded: `max_reconnects` reconnects in a row brought no event.
            MaestroError: any other failure (NOT_FOUND, INVALID_ARGUMENT, ...).
        """
        last = after_sequence
        failures = 0
        while True:
            reason = "the stream ended before the run finished"
            try:
                async with aclosing(self.stream_events(run, after_sequence=last)) as events:
                    async for event in events:
                        if event.sequence <= last:
                            continue
                        last = event.sequence
                        failures = 0
                        yield event
                        if event.is_terminal:
                            return
                # A clean end without the terminal event: the server ends a stream
                # that starts after the run's terminal event with nothing to send.
                if (await self.get_run(run)).is_final:
                    return
            except Unavailable as err:
                reason = err.message
            failures += 1
            if failures > max_reconnects:
                raise StreamEnded(
                    f"lost the event stream of {run_name(run)} after {max_reconnects} "
                    f"reconnects: {reason}"
                )
            delay = min(_BACKOFF_MAX_SECONDS, _BACKOFF_FIRST_SECONDS * 2 ** (failures - 1))
            log.info("event stream interrupted (%s); reconnecting in %.2fs", reason, delay)
            await asyncio.sleep(delay)

"""The public API: proto in, store read or scheduler call, proto out.

Every run is its creator's: the caller's identity (set by the serving interceptor
from the bearer token) must be the run's `created_by`, or an admin's; anyone else
gets the same NOT_FOUND as for a run that does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from gateway.convert import (
    EventProtoCache,
    artifact_to_proto,
    created_run_to_proto,
    decode_artifact_token,
    decode_page_token,
    encode_artifact_token,
    encode_page_token,
    persona_to_proto,
    run_to_proto,
    step_to_proto,
    workflow_to_proto,
)
from gateway.events import EventHub
from gateway.names import (
    ARTIFACT_TYPE,
    parse_artifact_name,
    parse_run_name,
    parse_step_name,
    run_name,
    run_not_found,
)
from gateway.scheduler_client import SchedulerClient
from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.core.auth import Identity, current_identity
from maestro.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Resource,
    Unauthenticated,
)
from maestro.personas import PERSONAS
from maestro.store import EventRecord, RunRecord, Store
from maestro.workflow import builtin_workflow, builtin_workflow_names, builtin_workflow_yaml
from maestro.workflow.limits import MAX_WORKFLOW_BYTES

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_ARTIFACT_PAGE_SIZE = 200
# A ListRuns page stops early past this many bytes of runs, so a page of runs with
# many steps stays far below a client's default 4 MiB receive limit.
MAX_PAGE_BYTES = 2 * 1024 * 1024
MAX_REQUIREMENT_CHARS = 20_000
MAX_REQUEST_ID_CHARS = 128
MAX_PROVIDER_CHARS = 32
MAX_COMMENT_CHARS = 20_000
# Sequences are dense from 1; this bound only keeps the value sane.
MAX_SEQUENCE = 2**62


def _caller() -> Identity:
    identity = current_identity.get()
    if identity is None:  # only if the server was built without authentication
        raise Unauthenticated("no authenticated caller")
    return identity


def _may_see(caller: Identity, created_by: str) -> bool:
    """Whether the caller may see a run that `created_by` created."""
    return caller.admin or created_by == caller.name


def _page_size(value: int, default: int) -> int:
    if not 0 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}, got {value}")
    return value or default


class MaestroServicer(gateway_pb2_grpc.MaestroServiceServicer):
    def __init__(self, store: Store, scheduler: SchedulerClient, hub: EventHub) -> None:
        self._store = store
        self._scheduler = scheduler
        self._hub = hub
        self._event_protos = EventProtoCache()
        # Built once: the built-in workflows are package files that never change.
        self._workflows = gateway_pb2.ListWorkflowsResponse(
            workflows=[
                workflow_to_proto(builtin_workflow(name), builtin_workflow_yaml(name))
                for name in builtin_workflow_names()
            ]
        )

    async def _run(self, run_id: str) -> RunRecord:
        """The run, if the caller may see it; NOT_FOUND otherwise."""
        caller = _caller()
        run = await self._store.get_run(run_id)
        if run is None or not _may_see(caller, run.created_by):
            raise run_not_found(run_id)
        return run

    async def _check_visible(self, run_id: str) -> None:
        """NOT_FOUND unless the run exists and the caller may see it (its steps unread)."""
        caller = _caller()
        head = await self._store.run_head(run_id)
        if head is None or not _may_see(caller, head.created_by):
            raise run_not_found(run_id)

    async def CreateRun(
        self, request: gateway_pb2.CreateRunRequest, context: Context
    ) -> gateway_pb2.Run:
        caller = _caller()
        if not request.requirement.strip():
            raise InvalidArgument("requirement", "is required")
        # Cheap bounds checked here, before anything is forwarded.
        if len(request.requirement) > MAX_REQUIREMENT_CHARS:
            raise InvalidArgument(
                "requirement",
                f"is {len(request.requirement)} characters; at most {MAX_REQUIREMENT_CHARS}",
            )
        size = len(request.workflow_yaml.encode())
        if size > MAX_WORKFLOW_BYTES:
            raise InvalidArgument("workflow_yaml", f"is {size} bytes; at most {MAX_WORKFLOW_BYTES}")
        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidArgument("request_id", f"is longer than {MAX_REQUEST_ID_CHARS} characters")
        if len(request.provider) > MAX_PROVIDER_CHARS:
            raise InvalidArgument("provider", "unknown provider; use 'anthropic' or 'offline'")
        answer = await self._scheduler.create_run(
            workflow_name=request.workflow_name,
            workflow_yaml=request.workflow_yaml,
            requirement=request.requirement,
            provider=request.provider,
            # Per identity: one caller's request id can never find another's run.
            request_id=f"{caller.name}/{request.request_id}" if request.request_id else "",
            created_by=caller.name,
        )
        if answer.HasField("created"):
            # Built from what the scheduler recorded: reading 1,000 steps back and
            # converting them was a third of CreateRun for a large workflow.
            return created_run_to_proto(answer.run_id, answer.created)
        return run_to_proto(await self._run(answer.run_id))

    async def GetRun(self, request: gateway_pb2.GetRunRequest, context: Context) -> gateway_pb2.Run:
        return run_to_proto(await self._run(parse_run_name(request.name)))

    async def ListRuns(
        self, request: gateway_pb2.ListRunsRequest, context: Context
    ) -> gateway_pb2.ListRunsResponse:
        caller = _caller()
        size = _page_size(request.page_size, DEFAULT_PAGE_SIZE)
        after = decode_page_token(request.page_token) if request.page_token else None
        # One extra row tells whether another page exists.
        runs = await self._store.list_runs(
            size + 1,
            after,
            created_by=None if caller.admin else caller.name,
            waiting_for_decision=request.waiting_for_decision,
        )
        response = gateway_pb2.ListRunsResponse()
        total = 0
        for run in runs[:size]:
            message = run_to_proto(run)
            total += message.ByteSize()
            if total > MAX_PAGE_BYTES and response.runs:
                break
            response.runs.append(message)
        if len(response.runs) < len(runs):
            response.next_page_token = encode_page_token(runs[len(response.runs) - 1])
        return response

    async def CancelRun(
        self, request: gateway_pb2.CancelRunRequest, context: Context
    ) -> gateway_pb2.Run:
        run_id = parse_run_name(request.name)
        run = await self._run(run_id)
        if run.state.finished:
            raise FailedPrecondition(f"run {run_name(run_id)} already finished {run.state.value}")
        try:
            await self._scheduler.cancel_run(run_id)
        except FailedPrecondition:
            # Finished between the read above and the scheduler's: say it our way.
            run = await self._run(run_id)
            raise FailedPrecondition(
                f"run {run_name(run_id)} already finished {run.state.value}"
            ) from None
        return run_to_proto(await self._run(run_id))

    async def ApproveStep(
        self, request: gateway_pb2.ApproveStepRequest, context: Context
    ) -> gateway_pb2.Step:
        return await self._decide(request.name, "approve", request.comment, request.request_id)

    async def RejectStep(
        self, request: gateway_pb2.RejectStepRequest, context: Context
    ) -> gateway_pb2.Step:
        if not request.comment.strip():
            raise InvalidArgument("comment", "a rejection needs a comment: say what is wrong")
        return await self._decide(request.name, "reject", request.comment, request.request_id)

    async def _decide(
        self, name: str, decision: str, comment: str, request_id: str
    ) -> gateway_pb2.Step:
        run_id, step_id = parse_step_name(name)
        run = await self._run(run_id)
        if not any(s.step_id == step_id for s in run.steps):
            raise NotFound(f"run {run_name(run_id)} has no step {step_id!r}")
        if len(comment) > MAX_COMMENT_CHARS:
            raise InvalidArgument("comment", f"is longer than {MAX_COMMENT_CHARS} characters")
        await self._scheduler.decide_step(
            run_id,
            step_id,
            decision,
            comment=comment,
            decided_by=_caller().name,
            request_id=request_id,
        )
        after = await self._run(run_id)
        (step,) = [s for s in after.steps if s.step_id == step_id]
        return step_to_proto(step)

    async def DeleteRun(
        self, request: gateway_pb2.DeleteRunRequest, context: Context
    ) -> empty_pb2.Empty:
        run_id = parse_run_name(request.name)
        await self._check_visible(run_id)
        # The store is the scheduler's to write: the gateway only reads it.
        await self._scheduler.delete_run(run_id)
        return empty_pb2.Empty()

    async def StreamRunEvents(
        self, request: gateway_pb2.StreamRunEventsRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.RunEvent]:
        async for events in self._follow(request):
            for event in events:
                yield self._event_protos.get(event)

    async def StreamRunEventBatches(
        self, request: gateway_pb2.StreamRunEventsRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.RunEventBatch]:
        async for events in self._follow(request):
            for batch in self._event_protos.batches(events):
                yield batch

    def _follow(
        self, request: gateway_pb2.StreamRunEventsRequest
    ) -> AsyncIterator[list[EventRecord]]:
        """The requested run's events, as the hub has them ready (see EventHub.follow)."""
        run_id = parse_run_name(request.name)
        if not 0 <= request.after_sequence <= MAX_SEQUENCE:
            raise InvalidArgument("after_sequence", "must be between 0 and 2^62")
        caller = _caller()
        # The hub decides visibility from the run's head it reads once for every stream
        # opening at once (a hundred followers each read the run before this, and its
        # first events waited for them).
        return self._hub.follow(
            run_id, request.after_sequence, may_see=lambda owner: _may_see(caller, owner)
        )

    async def ListArtifacts(
        self, request: gateway_pb2.ListArtifactsRequest, context: Context
    ) -> gateway_pb2.ListArtifactsResponse:
        run_id = parse_run_name(request.parent, field="parent")
        size = _page_size(request.page_size, DEFAULT_ARTIFACT_PAGE_SIZE)
        after, after_version = (
            decode_artifact_token(request.page_token) if request.page_token else (None, 0)
        )
        await self._check_visible(run_id)
        artifacts = await self._store.list_artifacts(
            run_id,
            all_versions=request.all_versions,
            limit=size + 1,
            after=after,
            after_version=after_version,
        )
        page = artifacts[:size]
        more = len(artifacts) > size
        return gateway_pb2.ListArtifactsResponse(
            artifacts=[artifact_to_proto(artifact) for artifact in page],
            next_page_token=encode_artifact_token(page[-1].path, page[-1].version) if more else "",
        )

    async def GetArtifact(
        self, request: gateway_pb2.GetArtifactRequest, context: Context
    ) -> gateway_pb2.Artifact:
        run_id, path = parse_artifact_name(request.name)
        await self._check_visible(run_id)
        artifact = await self._store.get_artifact(run_id, path)
        if artifact is None:
            name = f"{run_name(run_id)}/artifacts/{path}"
            raise NotFound(
                f"run {run_name(run_id)} has no artifact {path!r}",
                resource=Resource(ARTIFACT_TYPE, name),
            )
        return artifact_to_proto(artifact)

    async def ListWorkflows(
        self, request: gateway_pb2.ListWorkflowsRequest, context: Context
    ) -> gateway_pb2.ListWorkflowsResponse:
        _caller()
        return self._workflows

    async def GetCapacity(
        self, request: gateway_pb2.GetCapacityRequest, context: Context
    ) -> gateway_pb2.Capacity:
        _caller()
        answer = await self._scheduler.get_capacity()
        # The public API defines the same messages as the internal one (it does not
        # import it): the same wire format, which tests/unit checks field by field.
        return gateway_pb2.Capacity.FromString(answer.SerializeToString())

    async def ListPersonas(
        self, request: gateway_pb2.ListPersonasRequest, context: Context
    ) -> gateway_pb2.ListPersonasResponse:
        _caller()
        return gateway_pb2.ListPersonasResponse(
            personas=[persona_to_proto(PERSONAS[name]) for name in sorted(PERSONAS)]
        )

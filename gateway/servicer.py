"""The public API: proto in, store read or scheduler call, proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.convert import (
    artifact_to_proto,
    decode_page_token,
    encode_page_token,
    event_to_proto,
    run_to_proto,
)
from gateway.events import EventHub
from gateway.names import parse_artifact_name, parse_run_name
from gateway.scheduler_client import SchedulerClient
from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.core.errors import InvalidArgument, NotFound
from maestro.store import RunRecord, Store

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class MaestroServicer(gateway_pb2_grpc.MaestroServiceServicer):
    def __init__(self, store: Store, scheduler: SchedulerClient, hub: EventHub) -> None:
        self._store = store
        self._scheduler = scheduler
        self._hub = hub

    async def _run(self, run_id: str) -> RunRecord:
        run = await self._store.get_run(run_id)
        if run is None:
            raise NotFound(f"run runs/{run_id} does not exist")
        return run

    async def CreateRun(
        self, request: gateway_pb2.CreateRunRequest, context: Context
    ) -> gateway_pb2.Run:
        if not request.requirement.strip():
            raise InvalidArgument("requirement", "is required")
        run_id = await self._scheduler.create_run(
            workflow_name=request.workflow_name,
            workflow_yaml=request.workflow_yaml,
            requirement=request.requirement,
            provider=request.provider,
            request_id=request.request_id,
        )
        return run_to_proto(await self._run(run_id))

    async def GetRun(self, request: gateway_pb2.GetRunRequest, context: Context) -> gateway_pb2.Run:
        return run_to_proto(await self._run(parse_run_name(request.name)))

    async def ListRuns(
        self, request: gateway_pb2.ListRunsRequest, context: Context
    ) -> gateway_pb2.ListRunsResponse:
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        size = request.page_size or DEFAULT_PAGE_SIZE
        after = decode_page_token(request.page_token) if request.page_token else None
        # One extra row tells whether another page exists.
        runs = await self._store.list_runs(size + 1, after)
        token = encode_page_token(runs[size - 1]) if len(runs) > size else ""
        return gateway_pb2.ListRunsResponse(
            runs=[run_to_proto(run) for run in runs[:size]], next_page_token=token
        )

    async def CancelRun(
        self, request: gateway_pb2.CancelRunRequest, context: Context
    ) -> gateway_pb2.Run:
        run_id = parse_run_name(request.name)
        await self._run(run_id)
        await self._scheduler.cancel_run(run_id)
        return run_to_proto(await self._run(run_id))

    async def StreamRunEvents(
        self, request: gateway_pb2.StreamRunEventsRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.RunEvent]:
        run_id = parse_run_name(request.name)
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence", "must not be negative")
        await self._run(run_id)
        async for event in self._hub.follow(run_id, request.after_sequence):
            yield event_to_proto(event)

    async def ListArtifacts(
        self, request: gateway_pb2.ListArtifactsRequest, context: Context
    ) -> gateway_pb2.ListArtifactsResponse:
        run_id = parse_run_name(request.parent, field="parent")
        await self._run(run_id)
        artifacts = await self._store.list_artifacts(run_id)
        return gateway_pb2.ListArtifactsResponse(
            artifacts=[artifact_to_proto(artifact) for artifact in artifacts]
        )

    async def GetArtifact(
        self, request: gateway_pb2.GetArtifactRequest, context: Context
    ) -> gateway_pb2.Artifact:
        run_id, path = parse_artifact_name(request.name)
        await self._run(run_id)
        artifact = await self._store.get_artifact(run_id, path)
        if artifact is None:
            raise NotFound(f"run runs/{run_id} has no artifact {path!r}")
        return artifact_to_proto(artifact)

"""The scheduler's internal gRPC API: proto in, engine call, proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from maestro.api.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from maestro.core.errors import InvalidArgument
from scheduler.convert import capacity_to_proto, created_run_to_proto
from scheduler.engine import Engine
from scheduler.watch import ChangeFeed

Context = grpc.aio.ServicerContext[Any, Any]


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, engine: Engine, feed: ChangeFeed) -> None:
        self._engine = engine
        self._feed = feed

    async def CreateRun(
        self, request: scheduler_pb2.CreateRunRequest, context: Context
    ) -> scheduler_pb2.CreateRunResponse:
        accepted = await self._engine.create_run(
            workflow_name=request.workflow_name,
            workflow_yaml=request.workflow_yaml,
            requirement=request.requirement,
            provider=request.provider,
            request_id=request.request_id,
            created_by=request.created_by,
        )
        response = scheduler_pb2.CreateRunResponse(run_id=accepted.run_id)
        if accepted.created is not None:
            response.created.CopyFrom(created_run_to_proto(accepted.created))
        return response

    async def CancelRun(
        self, request: scheduler_pb2.CancelRunRequest, context: Context
    ) -> scheduler_pb2.CancelRunResponse:
        if not request.run_id:
            raise InvalidArgument("run_id", "is required")
        await self._engine.cancel_run(request.run_id)
        return scheduler_pb2.CancelRunResponse(run_id=request.run_id)

    async def DeleteRun(
        self, request: scheduler_pb2.DeleteRunRequest, context: Context
    ) -> scheduler_pb2.DeleteRunResponse:
        if not request.run_id:
            raise InvalidArgument("run_id", "is required")
        await self._engine.delete_run(request.run_id)
        return scheduler_pb2.DeleteRunResponse(run_id=request.run_id)

    async def GetCapacity(
        self, request: scheduler_pb2.GetCapacityRequest, context: Context
    ) -> scheduler_pb2.Capacity:
        return capacity_to_proto(self._engine.scheduler_id, self._engine.capacity.view())

    async def DecideStep(
        self, request: scheduler_pb2.DecideStepRequest, context: Context
    ) -> scheduler_pb2.DecideStepResponse:
        if not request.run_id:
            raise InvalidArgument("run_id", "is required")
        if not request.step_id:
            raise InvalidArgument("step_id", "is required")
        if request.decision not in ("approve", "reject"):
            raise InvalidArgument("decision", "must be approve or reject")
        decided = await self._engine.decide_step(
            request.run_id,
            request.step_id,
            request.decision,
            comment=request.comment,
            decided_by=request.decided_by,
            request_id=request.request_id,
        )
        return scheduler_pb2.DecideStepResponse(round=decided.round, decision=decided.decision)

    async def WatchRuns(
        self, request: scheduler_pb2.WatchRunsRequest, context: Context
    ) -> AsyncIterator[scheduler_pb2.RunChanges]:
        async for batch in self._feed.watch():
            yield scheduler_pb2.RunChanges(
                changes=[
                    scheduler_pb2.RunChange(run_id=run_id, last_sequence=sequence)
                    for run_id, sequence in batch.items()
                ]
            )

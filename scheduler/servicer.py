"""The scheduler's internal gRPC API: proto in, engine call, proto out."""

from __future__ import annotations

from typing import Any

import grpc

from maestro.api.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from maestro.core.errors import InvalidArgument
from scheduler.engine import Engine

Context = grpc.aio.ServicerContext[Any, Any]


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def CreateRun(
        self, request: scheduler_pb2.CreateRunRequest, context: Context
    ) -> scheduler_pb2.CreateRunResponse:
        run_id = await self._engine.create_run(
            workflow_name=request.workflow_name,
            workflow_yaml=request.workflow_yaml,
            requirement=request.requirement,
            provider=request.provider,
            request_id=request.request_id,
        )
        return scheduler_pb2.CreateRunResponse(run_id=run_id)

    async def CancelRun(
        self, request: scheduler_pb2.CancelRunRequest, context: Context
    ) -> scheduler_pb2.CancelRunResponse:
        if not request.run_id:
            raise InvalidArgument("run_id", "is required")
        await self._engine.cancel_run(request.run_id)
        return scheduler_pb2.CancelRunResponse(run_id=request.run_id)

"""The sandbox's gRPC API: proto in, SandboxRunner, proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from maestro.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from sandbox_service.convert import RequestLimits, report_response, request_from_proto
from sandbox_service.runner import Heartbeat, SandboxRunner

Context = grpc.aio.ServicerContext[Any, Any]


class SandboxServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    def __init__(self, runner: SandboxRunner, limits: RequestLimits) -> None:
        self._runner = runner
        self._limits = limits

    async def RunChecks(
        self, request: sandbox_pb2.RunChecksRequest, context: Context
    ) -> AsyncIterator[sandbox_pb2.RunChecksResponse]:
        checks = request_from_proto(request, self._limits)
        async for item in self._runner.run(checks, time_remaining=context.time_remaining()):
            if isinstance(item, Heartbeat):
                yield sandbox_pb2.RunChecksResponse(heartbeat=sandbox_pb2.Heartbeat())
            else:
                yield report_response(item)

"""The gateway's client of the scheduler's internal API, with deadlines."""

from __future__ import annotations

from maestro.api.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from maestro.core.client import insecure_channel, mapped_rpc_errors


class SchedulerClient:
    def __init__(self, address: str, *, timeout: float) -> None:
        self._address = address
        self._channel = insecure_channel(address, round_robin=True)
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close(None)

    async def create_run(
        self,
        *,
        workflow_name: str,
        workflow_yaml: str,
        requirement: str,
        provider: str,
        request_id: str,
        created_by: str,
    ) -> scheduler_pb2.CreateRunResponse:
        """The new (or, for a repeated request_id, the existing) run's id, with the run
        as recorded when this call recorded it."""
        request = scheduler_pb2.CreateRunRequest(
            requirement=requirement,
            provider=provider,
            request_id=request_id,
            created_by=created_by,
        )
        if workflow_yaml:
            request.workflow_yaml = workflow_yaml
        else:
            request.workflow_name = workflow_name
        with mapped_rpc_errors(f"the scheduler at {self._address}"):
            return await self._stub.CreateRun(request, timeout=self._timeout)

    async def delete_run(self, run_id: str) -> None:
        with mapped_rpc_errors(f"the scheduler at {self._address}"):
            await self._stub.DeleteRun(
                scheduler_pb2.DeleteRunRequest(run_id=run_id), timeout=self._timeout
            )

    async def decide_step(
        self,
        run_id: str,
        step_id: str,
        decision: str,
        *,
        comment: str,
        decided_by: str,
        request_id: str,
    ) -> None:
        with mapped_rpc_errors(f"the scheduler at {self._address}"):
            await self._stub.DecideStep(
                scheduler_pb2.DecideStepRequest(
                    run_id=run_id,
                    step_id=step_id,
                    decision=decision,
                    comment=comment,
                    decided_by=decided_by,
                    request_id=request_id,
                ),
                timeout=self._timeout,
            )

    async def cancel_run(self, run_id: str) -> None:
        with mapped_rpc_errors(f"the scheduler at {self._address}"):
            await self._stub.CancelRun(
                scheduler_pb2.CancelRunRequest(run_id=run_id), timeout=self._timeout
            )

    async def get_capacity(self) -> scheduler_pb2.Capacity:
        with mapped_rpc_errors(f"the scheduler at {self._address}"):
            return await self._stub.GetCapacity(
                scheduler_pb2.GetCapacityRequest(), timeout=self._timeout
            )

"""The local stack starts the sandbox first and points the worker and scheduler at it;
the sandbox's own process gets no API key and no other service's settings."""

from __future__ import annotations

from pathlib import Path

from grpc_health.v1 import health_pb2

from maestro.cli.stack import SANDBOX, SCHEDULER, WORKER, LocalStack
from tests.integration.sandbox_process import health_status


def _environ(pid: int | None) -> dict[str, str]:
    assert pid is not None
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(): value.decode() for key, value in pairs}


async def test_the_stack_runs_the_sandbox_without_secrets(anthropic_stack: LocalStack) -> None:
    address = anthropic_stack.address(SANDBOX)
    assert await health_status(address) == health_pb2.HealthCheckResponse.SERVING
    sandbox_env = _environ(anthropic_stack.pid(SANDBOX))
    assert "ANTHROPIC_API_KEY" not in sandbox_env
    assert not [k for k in sandbox_env if k.startswith(("MAESTRO_WORKER_", "MAESTRO_SCHEDULER_"))]
    assert _environ(anthropic_stack.pid(WORKER))["MAESTRO_WORKER_SANDBOX_ADDRESS"] == address
    scheduler_env = _environ(anthropic_stack.pid(SCHEDULER))
    assert scheduler_env["MAESTRO_SCHEDULER_SANDBOX_ADDRESS"] == address

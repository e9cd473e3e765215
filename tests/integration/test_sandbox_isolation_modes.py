"""Fail closed: a sandbox that cannot isolate says NOT_SERVING and refuses to run code;
only MAESTRO_SANDBOX_ISOLATION=none runs unisolated, and then every result says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maestro.core.client import insecure_channel
from maestro.core.errors import FailedPrecondition
from maestro.sandbox.client import SandboxClient
from maestro.sandbox.models import CheckName, CheckOutcome, CheckRequest, Isolation, SandboxFile
from tests.integration.sandbox_process import sandbox_process

REQUEST = CheckRequest(
    files=(SandboxFile(path="tests/test_x.py", content=b"def test_x():\n    assert True\n"),),
    checks=(CheckName.PYTEST, CheckName.COMPILE),
)
# serve() probes readiness every 5 s; NOT_SERVING is reported at the first probe.
HEALTH_WAIT_SECONDS = 20


async def test_without_cap_sys_admin_the_sandbox_is_not_serving(tmp_path: Path) -> None:
    # A container without CAP_SYS_ADMIN, say: namespaces cannot be made.
    no_admin = ["setpriv", "--bounding-set", "-sys_admin", "--"]
    with sandbox_process(tmp_path, prefix=no_admin) as sandbox:
        async with SandboxClient(sandbox.address) as client:
            with pytest.raises(FailedPrecondition) as caught:
                await client.run_checks(REQUEST, timeout=30)
        assert "cannot isolate generated code" in caught.value.message
        assert "Operation not permitted" in caught.value.message
        assert "MAESTRO_SANDBOX_ISOLATION=none" in caught.value.message
        channel = insecure_channel(sandbox.address)
        try:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_WAIT_SECONDS
            )
            async for answer in watch:
                if answer.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
            else:
                raise AssertionError("the health stream ended without NOT_SERVING")
        finally:
            await channel.close(None)
        assert "the sandbox cannot isolate generated code" in sandbox.log()


async def test_isolation_none_runs_and_says_so_in_every_result(tmp_path: Path) -> None:
    env = {
        "MAESTRO_SANDBOX_ISOLATION": "none",
        # Unjailed, pytest sees the whole virtualenv and loads every plugin in it: more
        # than the suite's 2 s of CPU on a slow machine. Limits are not what this tests.
        "MAESTRO_SANDBOX_CPU_SECONDS": "60",
        "MAESTRO_SANDBOX_WALL_SECONDS": "60",
    }
    with sandbox_process(tmp_path, env) as sandbox:
        async with SandboxClient(sandbox.address) as client:
            report = await client.run_checks(REQUEST, timeout=30)
        assert report.isolation is Isolation.NONE
        assert [c.outcome for c in report.checks] == [CheckOutcome.RAN] * 2
        assert report.metrics["tests_passed"] == 1
        assert "WITHOUT isolation" in sandbox.log()

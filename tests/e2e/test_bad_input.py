"""Bad input gets a precise error (status code, field, reason) and changes nothing."""

from __future__ import annotations

import grpc
import pytest

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc

CYCLIC = """
name: loops
steps:
  - {id: a, persona: requirements_analyst, depends_on: [c]}
  - {id: b, persona: solution_architect, depends_on: [a]}
  - {id: c, persona: backend_developer, depends_on: [b]}
"""


async def _expect(call: object, code: grpc.StatusCode, *fragments: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    for fragment in fragments:
        assert fragment in (caught.value.details() or "")


async def test_bad_requests_are_rejected_precisely_and_record_nothing(
    gateway: gateway_pb2_grpc.MaestroServiceAsyncStub,
) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await _expect(
        gateway.CreateRun(
            gateway_pb2.CreateRunRequest(workflow_name="sdlc-nope", requirement="x"), timeout=10
        ),
        invalid,
        "workflow_name",
        "sdlc-nope",
        "sdlc-parallel",
    )
    await _expect(
        gateway.CreateRun(
            gateway_pb2.CreateRunRequest(workflow_yaml=CYCLIC, requirement="x"), timeout=10
        ),
        invalid,
        "cycle",
        "a",
        "b",
        "c",
    )
    await _expect(
        gateway.CreateRun(
            gateway_pb2.CreateRunRequest(workflow_name="sdlc-linear", requirement="  "),
            timeout=10,
        ),
        invalid,
        "requirement",
    )
    await _expect(
        gateway.CreateRun(
            gateway_pb2.CreateRunRequest(
                workflow_name="sdlc-linear", requirement="x", provider="gpt"
            ),
            timeout=10,
        ),
        invalid,
        "provider",
        "gpt",
    )
    # A workflow name must never make the scheduler read a file on its own disk.
    await _expect(
        gateway.CreateRun(
            gateway_pb2.CreateRunRequest(workflow_name="/etc/passwd", requirement="x"),
            timeout=10,
        ),
        invalid,
        "workflow_name",
    )
    await _expect(
        gateway.GetRun(gateway_pb2.GetRunRequest(name="jobs/1"), timeout=10), invalid, "name"
    )
    await _expect(
        gateway.GetRun(gateway_pb2.GetRunRequest(name="runs/0123456789abcdef"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "runs/0123456789abcdef",
    )
    await _expect(
        gateway.GetArtifact(
            gateway_pb2.GetArtifactRequest(name="runs/abc/artifacts/../../etc/passwd"),
            timeout=10,
        ),
        invalid,
        "..",
    )
    await _expect(
        gateway.ListRuns(gateway_pb2.ListRunsRequest(page_token="garbage!"), timeout=10),
        invalid,
        "page_token",
    )
    await _expect(
        gateway.ListRuns(gateway_pb2.ListRunsRequest(page_size=-1), timeout=10),
        invalid,
        "page_size",
    )

    listing = await gateway.ListRuns(gateway_pb2.ListRunsRequest(), timeout=10)
    assert list(listing.runs) == []

"""Hostile input against every RPC of every service of a real local stack.

The requests are generated with hypothesis from the .proto descriptors (see
tests/e2e/hostile.py), with a bounded number of examples per RPC and a fixed seed.
For every call: no INTERNAL or UNKNOWN, an answer before the deadline; afterwards:
every service SERVING, and the runs that exist are exactly those some call was told
were created. And the scheduler's health answers within a second while the worst
workflows the limits allow are being validated.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings

from maestro.cli.credentials import ensure_local_credentials
from maestro.cli.stack import GATEWAY, SANDBOX, SCHEDULER, SERVICES, WORKER, LocalStack
from maestro.core.client import channel_options
from maestro.workflow.limits import MAX_DEPENDENCIES, MAX_WORKFLOW_BYTES
from tests.e2e.hostile import Rpc, Valid, load_services, messages, undecodable, valid_values

EXAMPLES_PER_RPC = 80
RAW_EXAMPLES_PER_RPC = 15
DEADLINE_SECONDS = 10.0
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
SERVING = health_pb2.HealthCheckResponse.SERVING
ONE_STEP = "name: one\nsteps:\n  - {id: requirements, persona: requirements_analyst}\n"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[LocalStack]:
    # Rate limits are tested elsewhere; here every request should reach the service.
    env = {
        "MAESTRO_GATEWAY_RATE_LIMIT_PER_SECOND": "100000",
        "MAESTRO_GATEWAY_RATE_LIMIT_BURST": "100000",
    }
    async with LocalStack(tmp_path / ".maestro", provider="offline", extra_env=env) as stack:
        yield stack


class Caller:
    """Synchronous calls (hypothesis runs in a thread) that record what they see."""

    def __init__(self, address: str, token: str) -> None:
        self.channel: Any = grpc.insecure_channel(address, options=channel_options())
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.created: set[str] = set()
        self.deleted: set[str] = set()
        self.codes: dict[str, set[grpc.StatusCode]] = {}

    def call(self, rpc: Rpc, payload: bytes) -> tuple[grpc.StatusCode, list[bytes]]:
        started = time.monotonic()
        responses: list[bytes] = []
        try:
            if rpc.client_streaming:  # ExecuteStep: the payload opens the stream
                stream = self.channel.stream_stream(rpc.path)(
                    iter([payload]), timeout=DEADLINE_SECONDS, metadata=self.metadata
                )
                responses.extend(stream)
            elif rpc.server_streaming:
                stream = self.channel.unary_stream(rpc.path)(
                    payload, timeout=DEADLINE_SECONDS, metadata=self.metadata
                )
                responses.extend(stream)
            else:
                responses.append(
                    self.channel.unary_unary(rpc.path)(
                        payload, timeout=DEADLINE_SECONDS, metadata=self.metadata
                    )
                )
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            failed: Any = err
            code, details = failed.code(), failed.details()
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
                rpc.path,
                payload[:200],
                details,
            )
        assert code != grpc.StatusCode.DEADLINE_EXCEEDED, (rpc.path, payload[:200])
        assert time.monotonic() - started < DEADLINE_SECONDS
        assert code in ALLOWED, (rpc.path, code)
        self.codes.setdefault(rpc.path, set()).add(code)
        return code, responses


def _check_rpc(
    caller: Caller,
    rpc: Rpc,
    valid: Valid,
    on_ok: Callable[[Rpc, Any, list[bytes]], None],
) -> None:
    @settings(
        max_examples=EXAMPLES_PER_RPC,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(messages(rpc.request.DESCRIPTOR, rpc.request, valid))
    def structured(request: Any) -> None:
        code, responses = caller.call(rpc, request.SerializeToString())
        if code == grpc.StatusCode.OK:
            on_ok(rpc, request, responses)

    @settings(
        max_examples=RAW_EXAMPLES_PER_RPC,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(undecodable(rpc.request.DESCRIPTOR))
    def raw(payload: bytes) -> None:
        code, _ = caller.call(rpc, payload)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (rpc.path, payload)

    if rpc.server_streaming and not rpc.request.DESCRIPTOR.fields:
        # Nothing to vary (WatchRuns: a stream that lasts as long as its caller wants);
        # only bytes that do not decode are worth sending.
        raw()
        return
    # One request of valid values only (the newest run's name), so every RPC's deep
    # path is taken at least once whatever hypothesis drew.
    request = rpc.request()
    for field in rpc.request.DESCRIPTOR.fields:
        if field.type == field.TYPE_STRING and not field.is_repeated:
            setattr(request, field.name, valid_values(field, valid)[-1])
    code, responses = caller.call(rpc, request.SerializeToString())
    if code == grpc.StatusCode.OK:
        on_ok(rpc, request, responses)
    structured()
    raw()


def _run_name(response: bytes, services: dict[str, list[Rpc]]) -> str:
    run_type = next(
        r for r in services["maestro.api.gateway.v1.MaestroService"] if r.method.name == "GetRun"
    )
    run = run_type.method.output_type
    from google.protobuf import message_factory

    message: Any = message_factory.GetMessageClass(run).FromString(response)
    return str(message.name)


def _undecodable_health_check(address: str) -> grpc.StatusCode:
    # HealthCheckRequest.service (field 1) holding bytes that are not UTF-8.
    with grpc.insecure_channel(address) as channel:
        raw: Any = channel.unary_unary
        try:
            raw("/grpc.health.v1.Health/Check")(b"\x0a\x02\xff\xfe", timeout=5)
        except grpc.RpcError as err:
            failed: Any = err
            return failed.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1.0
        )
    return int(answer.status)


def _attack(stack: LocalStack) -> Caller:
    services = load_services()
    creds = ensure_local_credentials(stack.data_dir)
    gateway = Caller(stack.gateway_address, creds.user_token)
    scheduler = Caller(stack.address(SCHEDULER), creds.service_token(GATEWAY))
    worker = Caller(stack.address(WORKER), creds.service_token(SCHEDULER))
    sandbox = Caller(stack.address(SANDBOX), creds.service_token(SCHEDULER))
    runs = ["runs/0123456789abcdef"]
    artifacts = ["runs/0123456789abcdef/artifacts/docs/requirements.md"]
    # No step of these runs waits for a decision: deciding one is FAILED_PRECONDITION.
    steps = ["runs/0123456789abcdef/steps/requirements"]
    valid: Valid = {
        "*": ["a requirement", "sdlc-linear", "requirements_analyst", "offline"],
        "name": runs,
        "GetArtifactRequest.name": artifacts,
        "ApproveStepRequest.name": steps,
        "RejectStepRequest.name": steps,
        "parent": runs,  # the same list: names added to one are in both
        "workflow_name": ["sdlc-linear"],
        "workflow_yaml": [ONE_STEP],
        "provider": ["", "offline"],
        "page_token": [""],
        "persona": ["requirements_analyst"],
        "run_id": ["0123456789abcdef"],
        "checks": ["compile"],
        "path": ["app/main.py"],
        "label": ["runs/0123456789abcdef/steps/a"],
    }

    def gateway_ok(rpc: Rpc, request: Any, responses: list[bytes]) -> None:
        if rpc.method.name == "CreateRun":
            name = _run_name(responses[0], services)
            gateway.created.add(name)
            valid["name"].append(name)
            valid["GetArtifactRequest.name"].append(f"{name}/artifacts/docs/requirements.md")
            steps.append(f"{name}/steps/requirements")
            valid["run_id"].append(name.removeprefix("runs/"))
        if rpc.method.name == "DeleteRun":
            gateway.deleted.add(request.name)

    def scheduler_ok(rpc: Rpc, request: Any, responses: list[bytes]) -> None:
        if rpc.method.name == "CreateRun":
            response = rpc.method.output_type
            from google.protobuf import message_factory

            created: Any = message_factory.GetMessageClass(response).FromString(responses[0])
            run_id = created.run_id
            gateway.created.add(f"runs/{run_id}")

    def ignore(rpc: Rpc, request: Any, responses: list[bytes]) -> None:
        return None

    targets = [
        ("maestro.api.gateway.v1.MaestroService", gateway, gateway_ok),
        ("maestro.api.scheduler.v1.SchedulerService", scheduler, scheduler_ok),
        ("maestro.api.worker.v1.WorkerService", worker, ignore),
        ("maestro.api.sandbox.v1.SandboxService", sandbox, ignore),
    ]
    assert {name for name, _, _ in targets} <= set(services)
    for service, caller, on_ok in targets:
        # Deleting last, so the other calls find the runs made before.
        for rpc in sorted(services[service], key=lambda r: r.method.name == "DeleteRun"):
            _check_rpc(caller, rpc, valid, on_ok)
    for caller in (scheduler, worker, sandbox):
        caller.channel.close()
    return gateway


async def test_hostile_requests_get_precise_answers_and_change_nothing_else(
    stack: LocalStack,
) -> None:
    started = time.monotonic()
    gateway = await asyncio.to_thread(_attack, stack)
    try:
        # Every service still answers health as before; health itself refuses
        # undecodable requests.
        for name in SERVICES:
            code = await asyncio.to_thread(_undecodable_health_check, stack.address(name))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, name
            status = await asyncio.to_thread(_health, stack.address(name))
            if name == SANDBOX:
                # NOT_SERVING where it cannot isolate generated code (by design); it must
                # still answer, within the second `_health` allows.
                assert status in (SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
            else:
                assert status == SERVING, name
        # The runs that exist are exactly those a call was told it created.
        services = load_services()
        list_runs = next(
            r
            for r in services["maestro.api.gateway.v1.MaestroService"]
            if r.method.name == "ListRuns"
        )
        request = list_runs.request(page_size=1000)
        code, responses = await asyncio.to_thread(
            gateway.call, list_runs, request.SerializeToString()
        )
        assert code == grpc.StatusCode.OK
        from google.protobuf import message_factory

        listing: Any = message_factory.GetMessageClass(list_runs.method.output_type).FromString(
            responses[0]
        )
        assert {run.name for run in listing.runs} == gateway.created - gateway.deleted
        # The suite reached past validation: every gateway RPC was also answered OK (or,
        # for CancelRun of runs that finish at once, FAILED_PRECONDITION).
        public = services["maestro.api.gateway.v1.MaestroService"]
        assert len(gateway.codes) == len(public) == 14
        for path, codes in gateway.codes.items():
            assert codes & {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}, path
    finally:
        gateway.channel.close()
    assert time.monotonic() - started < 110


# As many steps with MAX_DEPENDENCIES long unknown names each as fit in MAX_WORKFLOW_BYTES.
FITTING_STEPS = 100


def _worst_workflow(seed: int) -> str:
    """The most work the limits allow: every step, every dependency unknown."""
    deps = ", ".join(f"unknown_{seed}_{i:04d}_{'x' * 20}" for i in range(MAX_DEPENDENCIES))
    steps = "".join(
        f"  - {{id: s{seed}_{i}, persona: qa_engineer, depends_on: [{deps}]}}\n"
        for i in range(FITTING_STEPS)
    )
    text = f"name: worst\nsteps:\n{steps}"
    assert len(text.encode()) <= MAX_WORKFLOW_BYTES
    return text


async def test_the_scheduler_answers_health_within_a_second_while_validating(
    stack: LocalStack,
) -> None:
    creds = ensure_local_credentials(stack.data_dir)
    services = load_services()
    create = next(
        r for r in services["maestro.api.gateway.v1.MaestroService"] if r.method.name == "CreateRun"
    )
    channel: Any = grpc.aio.insecure_channel(stack.gateway_address, options=channel_options())
    call = channel.unary_unary(create.path)
    metadata = (("authorization", f"Bearer {creds.user_token}"),)

    async def create_worst(seed: int) -> grpc.StatusCode:
        request = create.request(
            workflow_yaml=_worst_workflow(seed), requirement="x", request_id=uuid.uuid4().hex
        )
        try:
            await call(request.SerializeToString(), timeout=30, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    creating = asyncio.gather(*(create_worst(seed) for seed in range(24)))
    health = grpc.aio.insecure_channel(stack.address(SCHEDULER))
    stub = health_pb2_grpc.HealthStub(health)
    answers = []
    try:
        while not creating.done():
            sent = time.monotonic()
            answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            answers.append((answer.status, time.monotonic() - sent))
        codes = await creating
    finally:
        await health.close(None)
        await channel.close(None)
    assert answers, "the validations ended before a single health check"
    assert all(status == health_pb2.HealthCheckResponse.SERVING for status, _ in answers)
    assert max(took for _, took in answers) < 1.0
    assert set(codes) <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert grpc.StatusCode.INVALID_ARGUMENT in codes

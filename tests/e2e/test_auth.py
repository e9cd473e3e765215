"""Authentication end to end: tokens, run ownership, service tokens between services,
the API key's reach, private files, and TLS with a CA made in the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from maestro.api.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.cli.credentials import ensure_local_credentials
from maestro.cli.gateway_client import GatewayClient
from maestro.cli.stack import GATEWAY, SANDBOX, SCHEDULER, WORKER, LocalStack
from maestro.core.auth import hash_token, new_token
from maestro.core.client import insecure_channel
from maestro.core.errors import Unavailable
from tests.e2e.events import collect_events

ALICE, BOB, ROOT = new_token(), new_token(), new_token()
ONE_STEP = "name: one\nsteps:\n  - {id: requirements, persona: requirements_analyst}\n"


@pytest.fixture
async def shared_stack(tmp_path: Path) -> AsyncIterator[LocalStack]:
    tokens = tmp_path / "tokens"
    tokens.write_text(
        f"alice {hash_token(ALICE)}\nbob {hash_token(BOB)}\nroot {hash_token(ROOT)}\n"
    )
    tokens.chmod(0o600)
    env = {
        "MAESTRO_GATEWAY_TOKENS_FILE": str(tokens),
        "MAESTRO_GATEWAY_ADMIN_IDENTITIES": "root",
        # Must reach the worker only, even when the parent's environment has it.
        "ANTHROPIC_API_KEY": "sk-test-never-outside-the-worker",
    }
    async with LocalStack(tmp_path / "stack", provider="offline", extra_env=env) as stack:
        yield stack


def _stub(stack: LocalStack, token: str | None) -> tuple[grpc.aio.Channel, Any]:
    channel = insecure_channel(stack.gateway_address, token=token)
    return channel, gateway_pb2_grpc.MaestroServiceStub(channel)


async def _code(call: Any) -> grpc.StatusCode:
    try:
        result = call
        if hasattr(result, "read"):
            await result.read()
        else:
            await result
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_the_gateway_needs_a_known_token(shared_stack: LocalStack) -> None:
    for token in (None, "mst_not-a-token-we-know", ALICE[:-1]):
        channel, stub = _stub(shared_stack, token)
        try:
            request = gateway_pb2.CreateRunRequest(workflow_name="sdlc-linear", requirement="x")
            assert await _code(stub.CreateRun(request, timeout=10)) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            assert await _code(stub.ListRuns(gateway_pb2.ListRunsRequest(), timeout=10)) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            events = stub.StreamRunEvents(
                gateway_pb2.StreamRunEventsRequest(name="runs/0123456789abcdef"), timeout=10
            )
            assert await _code(events) == grpc.StatusCode.UNAUTHENTICATED
            # Health stays public (probes carry no token).
            health = health_pb2_grpc.HealthStub(channel)
            checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await channel.close(None)
    # Nothing was created by the refused calls.
    channel, stub = _stub(shared_stack, ROOT)
    try:
        listing = await stub.ListRuns(gateway_pb2.ListRunsRequest(), timeout=10)
        assert list(listing.runs) == []
    finally:
        await channel.close(None)


async def test_a_run_is_visible_only_to_its_creator_and_admins(shared_stack: LocalStack) -> None:
    alice_channel, alice = _stub(shared_stack, ALICE)
    bob_channel, bob = _stub(shared_stack, BOB)
    root_channel, root = _stub(shared_stack, ROOT)
    try:
        request_id = uuid.uuid4().hex
        run = await alice.CreateRun(
            gateway_pb2.CreateRunRequest(
                workflow_yaml=ONE_STEP, requirement="alice's", request_id=request_id
            ),
            timeout=10,
        )
        assert run.creator == "alice"
        await collect_events(alice, run.name)
        name = run.name
        not_found = grpc.StatusCode.NOT_FOUND
        calls = [
            bob.GetRun(gateway_pb2.GetRunRequest(name=name), timeout=10),
            bob.CancelRun(gateway_pb2.CancelRunRequest(name=name), timeout=10),
            bob.DeleteRun(gateway_pb2.DeleteRunRequest(name=name), timeout=10),
            bob.ListArtifacts(gateway_pb2.ListArtifactsRequest(parent=name), timeout=10),
            bob.GetArtifact(
                gateway_pb2.GetArtifactRequest(name=f"{name}/artifacts/docs/requirements.md"),
                timeout=10,
            ),
            bob.StreamRunEvents(gateway_pb2.StreamRunEventsRequest(name=name), timeout=10),
        ]
        for call in calls:
            assert await _code(call) == not_found
        # The same request_id from bob is bob's own request, not a way to alice's run.
        bobs = await bob.CreateRun(
            gateway_pb2.CreateRunRequest(
                workflow_yaml=ONE_STEP, requirement="bob's", request_id=request_id
            ),
            timeout=10,
        )
        assert bobs.name != name and bobs.creator == "bob"
        await collect_events(bob, bobs.name)
        listed = await bob.ListRuns(gateway_pb2.ListRunsRequest(), timeout=10)
        assert [r.name for r in listed.runs] == [bobs.name]
        everyone = await root.ListRuns(gateway_pb2.ListRunsRequest(), timeout=10)
        assert {r.name for r in everyone.runs} == {name, bobs.name}
        seen = await root.GetRun(gateway_pb2.GetRunRequest(name=name), timeout=10)
        assert seen.creator == "alice"
        # Deleting: the owner may, once the run is finished; then it is gone.
        await alice.DeleteRun(gateway_pb2.DeleteRunRequest(name=name), timeout=10)
        assert (
            await _code(alice.GetRun(gateway_pb2.GetRunRequest(name=name), timeout=10)) == not_found
        )
    finally:
        for channel in (alice_channel, bob_channel, root_channel):
            await channel.close(None)


async def test_services_answer_only_the_callers_they_serve(shared_stack: LocalStack) -> None:
    creds = ensure_local_credentials(shared_stack.data_dir)
    attempt = worker_pb2.ExecuteStepRequest(
        attempt=worker_pb2.StepAttempt(run_id="0123456789abcdef", step_id="a", attempt=1),
        persona="requirements_analyst",
        requirement="a model call that no run records",
        provider="offline",
    )
    # Only the scheduler's token opens the worker; not the gateway's, not a user's.
    for token in (None, creds.service_token(GATEWAY), creds.user_token, ALICE):
        channel = insecure_channel(shared_stack.address(WORKER), token=token)
        try:
            stream = worker_pb2_grpc.WorkerServiceStub(channel).ExecuteStep(
                iter([worker_pb2.ExecuteStepInput(start=attempt)]), timeout=10
            )
            assert await _code(stream) == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await channel.close(None)
    # Only the gateway's opens the scheduler.
    for token in (None, creds.service_token(WORKER), ALICE):
        channel = insecure_channel(shared_stack.address(SCHEDULER), token=token)
        try:
            create = scheduler_pb2_grpc.SchedulerServiceStub(channel).CreateRun(
                scheduler_pb2.CreateRunRequest(workflow_name="sdlc-linear", requirement="x"),
                timeout=10,
            )
            assert await _code(create) == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await channel.close(None)
    # The sandbox answers the scheduler and workers only.
    checks = sandbox_pb2.RunChecksRequest(
        files=[sandbox_pb2.File(path="a.py", content=b"x = 1\n")], checks=["compile"]
    )
    for token, allowed in (
        (None, False),
        (ALICE, False),
        (creds.service_token(GATEWAY), False),
        (creds.service_token(SCHEDULER), True),
        (creds.service_token(WORKER), True),
    ):
        channel = insecure_channel(shared_stack.address(SANDBOX), token=token)
        try:
            run_checks = sandbox_pb2_grpc.SandboxServiceStub(channel).RunChecks(checks, timeout=30)
            code = await _code(run_checks)
        finally:
            await channel.close(None)
        # Allowed callers get past authentication (FAILED_PRECONDITION on a host where
        # the sandbox cannot isolate).
        assert (code != grpc.StatusCode.UNAUTHENTICATED) == allowed, (token, code)
    # The scheduler's own token does work on the worker (the path every run takes).
    channel = insecure_channel(shared_stack.address(WORKER), token=creds.service_token(SCHEDULER))
    try:
        stream = worker_pb2_grpc.WorkerServiceStub(channel).ExecuteStep(
            iter([worker_pb2.ExecuteStepInput(start=attempt)]), timeout=30
        )
        kinds = [message.WhichOneof("kind") async for message in stream]
        assert kinds[-1] == "result"
    finally:
        await channel.close(None)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(): value.decode(errors="replace") for key, value in pairs}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_the_api_key_reaches_only_the_worker_and_the_data_dir_is_private(
    shared_stack: LocalStack,
) -> None:
    # The stack's process table is private; this test reads it to look at real envs.
    pids = {name: service.process.pid for name, service in shared_stack._running.items()}
    assert "ANTHROPIC_API_KEY" in _environ(pids[WORKER])
    for name in (SCHEDULER, GATEWAY):
        env = _environ(pids[name])
        assert "ANTHROPIC_API_KEY" not in env
        assert "sk-test-never-outside-the-worker" not in "".join(env.values())
    data = shared_stack.data_dir
    assert data.stat().st_mode & 0o777 == 0o700
    for path in [*data.iterdir(), *(data / "logs").iterdir()]:
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, path


def _certificates(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Maestro test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM)


def _port(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


async def _wait_for_port(path: Path, process: asyncio.subprocess.Process) -> int:
    # The service writes the file once it is serving (as LocalStack waits for it).
    for _ in range(400):
        if process.returncode is not None:
            raise AssertionError(f"the TLS gateway exited with {process.returncode}")
        port = await asyncio.to_thread(_port, path)
        if port is not None:
            return port
        await asyncio.sleep(0.05)
    raise AssertionError("the TLS gateway never wrote its port")


async def test_tls_end_to_end_with_a_test_ca(shared_stack: LocalStack, tmp_path: Path) -> None:
    cert_file, key_file, ca_pem = _certificates(tmp_path)
    creds = ensure_local_credentials(shared_stack.data_dir)
    port_file = tmp_path / "tls-gateway.port"
    env = {
        **os.environ,
        "MAESTRO_GATEWAY_DATABASE": shared_stack.database_url,
        "MAESTRO_GATEWAY_SCHEDULER_ADDRESS": shared_stack.address(SCHEDULER),
        "MAESTRO_GATEWAY_TOKENS_FILE": str(tmp_path / "tokens"),
        "MAESTRO_GATEWAY_TLS_CERT_FILE": str(cert_file),
        "MAESTRO_GATEWAY_TLS_KEY_FILE": str(key_file),
        "MAESTRO_GATEWAY_PORT_FILE": str(port_file),
        "MAESTRO_SERVICE_TOKEN": creds.service_token(GATEWAY),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        port = await _wait_for_port(port_file, process)
        async with GatewayClient(
            f"localhost:{port}", token=ALICE, root_certificates=ca_pem
        ) as client:
            run = await client.create_run(requirement="over TLS", workflow_yaml=ONE_STEP)
            events = [event async for event in client.follow_events(run.name)]
            assert events[-1].type == "RUN_SUCCEEDED"
        # Plaintext, or TLS trusting another CA: no connection at all.
        (tmp_path / "other").mkdir()
        _, _, other_ca = _certificates(tmp_path / "other")
        for client in (
            GatewayClient(f"localhost:{port}", token=ALICE, timeout=3),
            GatewayClient(f"localhost:{port}", token=ALICE, root_certificates=other_ca, timeout=3),
        ):
            async with client:
                with pytest.raises(Unavailable):
                    await client.list_runs()
    finally:
        process.terminate()
        await process.wait()

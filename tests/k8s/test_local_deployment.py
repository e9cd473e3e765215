"""The dev overlay drives a real deployment on this machine (no cluster is reachable).

Every Deployment's container runs as a local process with exactly the command, env,
ports, user and capabilities its manifest gives (tests/k8s/local_cluster.py says how
pods, Services and volumes are mapped); the migration Job runs first, and the init
containers wait for it. Two things stand in for what is outside Maestro: a fresh local
PostgreSQL database for the StatefulSet (the Secret must point at that StatefulSet's
Service), and the fake Anthropic API for the internet (the workers' only addition is
its base URL; the key is the Secret the README tells operators to create).

Then: a run goes through the gateway Service's port; every gRPC probe of every pod
answers SERVING on its port and service name; the sandbox builds its jails with the
manifest's capability bounding set; a docs worker is rolled over (a new pod first, then
SIGTERM to the old one mid-step) and its attempt finishes there; the code pool goes
from 1 to 3 pods and its steps spread over all three.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.core.auth import SERVICE_TOKEN_ENV
from maestro.core.client import insecure_channel
from maestro.sandbox.client import SandboxClient
from maestro.sandbox.models import CheckName, CheckOutcome, CheckRequest, Isolation, SandboxFile
from tests.e2e.events import collect_events
from tests.fakes.anthropic_server import FakeAnthropic, Stall
from tests.k8s.local_cluster import LocalCluster, Pod, check_health
from tests.k8s.local_dns import LocalDns
from tests.k8s.manifests import K8S, Manifests, pod_spec, render
from tests.support.databases import create_postgres, drop_postgres, postgres_url

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

WORKERS = ("maestro-worker-code", "maestro-worker-docs")
CODE_POOL_SCALE = 3
REQUIREMENTS_HOLD_SECONDS = 5.0
DEV_USER_TOKEN = "mst_dev-only-user"


@pytest.fixture(scope="module")
def dev() -> Manifests:
    return Manifests(render(K8S / "overlays" / "dev"))


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new, empty PostgreSQL database: the migration Job gives it its schema."""
    name = create_postgres()
    try:
        yield postgres_url(name)
    finally:
        drop_postgres(name)


@pytest.fixture
def pod_root() -> Iterator[Path]:
    """Where the pods' volumes and logs go: readable by the pods' own users (pytest's
    tmp_path is private to the user running the tests)."""
    root = Path(tempfile.mkdtemp(prefix="maestro-k8s-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
async def cluster(
    dev: Manifests, pod_root: Path, empty_database: str, fake_anthropic: FakeAnthropic
) -> AsyncIterator[LocalCluster]:
    # The Secret's URL names the StatefulSet's Service; the local database stands in.
    url = urlsplit(dev.secret("maestro-database")["MAESTRO_DATABASE_URL"])  # type: ignore[index]
    service = dev.get("Service", "maestro-postgres")
    statefulset = dev.get("StatefulSet", "maestro-postgres")
    assert url.hostname == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]
    assert url.port in [p["containerPort"] for p in pod_spec(statefulset)["containers"][0]["ports"]]
    local = LocalCluster(
        dev,
        pod_root,
        scale={"maestro-worker-code": CODE_POOL_SCALE, "maestro-worker-docs": 2},
        secret_overrides={
            "maestro-database": {"MAESTRO_DATABASE_URL": empty_database},
            # The README's `kubectl create secret generic maestro-anthropic ...`.
            "maestro-anthropic": {"ANTHROPIC_API_KEY": "test-key"},
        },
        extra_env={
            w: {"MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake_anthropic.base_url} for w in WORKERS
        },
    )
    dns = await LocalDns(local.service_records()).start()
    local.dns_port = dns.port
    try:
        yield local
    finally:
        await local.close()
        dns.close()


def attempts(pod: Pod) -> list[dict[str, str]]:
    """The worker's attempt log lines (JSON), in order."""
    lines = []
    for line in pod.log_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "persona_service.servicer":
                lines.append(entry)
    return lines


def steps_started(pod: Pod) -> set[tuple[str, str]]:
    return {(a["run_id"], a["step_id"]) for a in attempts(pod) if " started " in a["message"]}


async def run_workflow(stub: gateway_pb2_grpc.MaestroServiceAsyncStub, requirement: str) -> str:
    run = await stub.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_name="sdlc-parallel", requirement=requirement, request_id=uuid.uuid4().hex
        ),
        timeout=10,
    )
    events = await collect_events(stub, run.name, timeout=60)
    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED, [
        (gateway_pb2.EventType.Name(e.type), e.step_id, e.message) for e in events[-5:]
    ]
    return str(run.name)


async def test_the_dev_overlay_runs_a_workflow_drains_and_scales(
    dev: Manifests, cluster: LocalCluster, fake_anthropic: FakeAnthropic
) -> None:
    # The migration Job: `maestro db upgrade` on the empty database.
    job = cluster.pod("maestro-db-upgrade", 0)
    assert await cluster.run_to_completion(job) == 0, job.log_text()

    # Every Deployment at its replicas, all at once (init containers wait for the schema).
    await asyncio.gather(
        *(
            cluster.start(d["metadata"]["name"], replica)
            for d in dev.of_kind("Deployment")
            for replica in range(d["spec"]["replicas"])
        )
    )
    await every_probe_serves(cluster)

    sandbox_address = cluster.pods["maestro-worker-code-0"].main.env[
        "MAESTRO_WORKER_SANDBOX_ADDRESS"
    ]
    # Called as a worker is: with the worker's token from the dev Secret.
    worker_token = dev.secret("maestro-service-auth")["worker-token"]  # type: ignore[index]
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SERVICE_TOKEN_ENV, worker_token)
        await the_sandbox_runs_isolated_checks(sandbox_address)

    gateway = dev.get("Service", "maestro-gateway")
    address = cluster.localize(f"maestro-gateway:{gateway['spec']['ports'][0]['port']}", "", {})
    # The dev overlay's user (README): its token's hash is in maestro-gateway-tokens.
    channel = insecure_channel(address, token=DEV_USER_TOKEN)
    stub = gateway_pb2_grpc.MaestroServiceStub(channel)
    try:
        await a_rollout_of_the_docs_pool_finishes_the_attempt_in_flight(
            cluster, stub, fake_anthropic
        )
        await the_code_pool_spreads_steps_over_three_pods(cluster, stub)
    finally:
        await channel.close(None)


async def every_probe_serves(cluster: LocalCluster) -> None:
    running = [p for p in cluster.pods.values() if p.process and p.process.returncode is None]
    for pod in running:
        assert pod.main.probes, f"{pod.name} declares no gRPC probe"
        for probe in pod.main.probes:
            status = await check_health(pod.ip, probe.port, probe.service)
            assert status == "SERVING", (pod.name, probe)


async def the_sandbox_runs_isolated_checks(address: str) -> None:
    files = (
        SandboxFile(path="calc.py", content=b"def add(a, b):\n    return a + b\n"),
        SandboxFile(
            path="test_calc.py",
            content=b"from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        ),
    )
    async with SandboxClient(address) as sandbox:
        report = await sandbox.run_checks(
            CheckRequest(files=files, checks=(CheckName.PYTEST,), label="k8s test"), timeout=120
        )
    assert report.isolation is Isolation.NAMESPACES
    (result,) = report.checks
    assert result.outcome is CheckOutcome.RAN, result.reason
    assert result.metrics["tests_passed"] == 1


async def a_rollout_of_the_docs_pool_finishes_the_attempt_in_flight(
    cluster: LocalCluster,
    stub: gateway_pb2_grpc.MaestroServiceAsyncStub,
    fake: FakeAnthropic,
) -> None:
    old = cluster.pods["maestro-worker-docs-0"]
    fake.push_when("You are the requirements analyst", Stall(REQUIREMENTS_HOLD_SECONDS))
    run = await stub.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_name="sdlc-parallel", requirement="a URL shortener", request_id="rollout"
        ),
        timeout=10,
    )
    assert await fake.wait_for_requests_async(1, within=20)
    assert steps_started(old) == {(run.name.removeprefix("runs/"), "requirements")}

    # The rollout (maxSurge 1, maxUnavailable 0): the new pod is ready, then the old
    # one gets SIGTERM while its attempt waits on the model.
    new = await cluster.start("maestro-worker-docs", 1)
    assert await cluster.terminate(old) == 0

    assert [a["message"] for a in attempts(old)] == [
        "attempt 1 of step requirements started (requirements_analyst)",
        "attempt 1 of step requirements succeeded",
    ]
    # In that order: SIGTERM, drain (with the manifest's grace), the attempt's end.
    messages = [json.loads(x)["message"] for x in old.log_text().splitlines() if x.startswith("{")]
    drain = messages.index("shutting down: draining for up to 900.0s")
    assert drain < messages.index("attempt 1 of step requirements succeeded")

    events = await collect_events(stub, run.name, timeout=60)
    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    assert not [e for e in events if e.type == gateway_pb2.EVENT_TYPE_ATTEMPT_LOST]
    final = await stub.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=5)
    assert {s.step_id: s.attempts for s in final.steps}["requirements"] == 1
    run_id = run.name.removeprefix("runs/")
    # The rest of the run's document steps went to the new pod; its code steps to the
    # code pool's only pod.
    assert {s for r, s in steps_started(new) if r == run_id} == {"architecture", "review", "docs"}
    code = cluster.pods["maestro-worker-code-0"]
    assert {s for r, s in steps_started(code) if r == run_id} == {
        "backend",
        "frontend",
        "testing",
        "packaging",
    }


# The built-in sdlc-parallel's steps that the code pool runs.
CODE_STEPS = 4


async def the_code_pool_spreads_steps_over_three_pods(
    cluster: LocalCluster, stub: gateway_pb2_grpc.MaestroServiceAsyncStub
) -> None:
    await asyncio.gather(*(cluster.start("maestro-worker-code", r) for r in (1, 2)))
    pods = [cluster.pods[f"maestro-worker-code-{r}"] for r in range(CODE_POOL_SCALE)]
    await every_probe_serves(cluster)
    before = [steps_started(pod) for pod in pods]

    # The scheduler's channel reconnects to the new pods' addresses on its own backoff
    # (up to about 20 s here); runs go on until every pod has had a step of them.
    runs: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs.append(await run_workflow(stub, f"a todo list, take {len(runs) + 1}"))
        served = [steps_started(pod) - seen for pod, seen in zip(pods, before, strict=True)]
        if all(served):
            break
    counts = {pod.name: len(s) for pod, s in zip(pods, served, strict=True)}
    assert all(counts.values()), f"steps of {len(runs)} runs per pod: {counts}"
    # every code step (backend, frontend, testing, packaging) ran once
    assert sum(counts.values()) == CODE_STEPS * len(runs), counts

    # Now that the channel has all three, round-robin deals the next steps out evenly.
    before = [steps_started(pod) for pod in pods]
    for take in range(3):
        await run_workflow(stub, f"a todo list, even take {take + 1}")
    shares = [len(steps_started(pod) - seen) for pod, seen in zip(pods, before, strict=True)]
    assert sum(shares) == 3 * CODE_STEPS and max(shares) - min(shares) <= 1, shares

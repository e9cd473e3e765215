"""Metrics and traces of a real run: every service scraped, every span received over OTLP.

The services are separate processes, so the test is their OTLP collector: a real
grpc.aio server speaking OpenTelemetry's TraceService, to which each service's real
exporter sends its spans. Spans are kept in memory here and looked at once the run ends.
"""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.stack import GATEWAY, SANDBOX, SCHEDULER, WORKER, LocalStack
from tests.e2e.channels import gateway_channel
from tests.e2e.conftest import FAST_RETRIES
from tests.e2e.events import collect_events

REQUIREMENT = "A todo list API"


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return await asyncio.to_thread(_scrape, url)


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str):
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def worker_steps(run: gateway_pb2.Run) -> list[gateway_pb2.Step]:
    """The steps a persona worker ran (a gate runs in the sandbox)."""
    return [s for s in run.steps if s.kind == "persona"]


async def _offline_run(stack: LocalStack, workflow: str = "sdlc-parallel") -> gateway_pb2.Run:
    channel = gateway_channel(stack)
    try:
        gateway = gateway_pb2_grpc.MaestroServiceStub(channel)
        run = await gateway.CreateRun(
            gateway_pb2.CreateRunRequest(
                workflow_name=workflow, requirement=REQUIREMENT, request_id=uuid.uuid4().hex
            ),
            timeout=10,
        )
        events = await collect_events(gateway, run.name)
        assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
        result: gateway_pb2.Run = await gateway.GetRun(
            gateway_pb2.GetRunRequest(name=run.name), timeout=10
        )
        return result
    finally:
        await channel.close(None)


async def test_each_service_serves_run_step_and_rpc_metrics_after_an_offline_run(
    tmp_path: Path, database_url: str
) -> None:
    async with LocalStack(
        tmp_path / "stack", provider="offline", extra_env=FAST_RETRIES, database_url=database_url
    ) as stack:
        run = await _offline_run(stack)
        urls = stack.metrics_urls
        assert set(urls) == {SANDBOX, WORKER, SCHEDULER, GATEWAY}
        # The meter counts what was committed, a moment after the commit.
        scheduler = await _eventually(
            urls[SCHEDULER],
            lambda s: total(s, "maestro_runs_total", state="SUCCEEDED") >= 1,
        )
        # The worker counts an attempt as it ends, just after the scheduler read the
        # result.
        worker = await _eventually(
            urls[WORKER],
            lambda s: total(s, "maestro_worker_attempts_total") >= len(worker_steps(run)),
        )
        gateway = await scrape(urls[GATEWAY])
        sandbox = await scrape(urls[SANDBOX])

    steps = list(run.steps)
    # Steps are counted by persona, a gate by its kind (it has no persona).
    personas = {s.persona or s.kind for s in steps}
    # Scheduler: the run and each step, in the states they went through.
    assert total(scheduler, "maestro_runs_total", state="PENDING") == 1
    assert total(scheduler, "maestro_runs_total", state="RUNNING") == 1
    assert total(scheduler, "maestro_runs_total", state="SUCCEEDED") == 1
    assert total(scheduler, "maestro_runs_total", state="FAILED") == 0
    assert total(scheduler, "maestro_steps_total", state="SUCCEEDED") == len(steps)
    assert total(scheduler, "maestro_steps_total", state="RUNNING") == len(steps)
    for persona in personas:
        expected = sum((s.persona or s.kind) == persona for s in steps)
        assert total(scheduler, "maestro_steps_total", persona=persona, state="SUCCEEDED") == (
            expected
        )
        assert (
            total(
                scheduler,
                "maestro_step_attempt_duration_seconds_count",
                persona=persona,
                outcome="succeeded",
            )
            == expected
        )
    assert total(scheduler, "maestro_steps_in_flight") == 0
    assert total(scheduler, "maestro_steps_queued") == 0
    assert (
        total(scheduler, "grpc_server_handled_total", grpc_method="CreateRun", grpc_code="OK") == 1
    )
    # Worker: one attempt per persona step, succeeded, with the offline provider.
    personas_run = len(worker_steps(run))
    assert total(worker, "maestro_worker_attempts_total", outcome="succeeded") == personas_run
    assert total(worker, "maestro_worker_attempts_total", provider="offline") == personas_run
    assert total(worker, "maestro_worker_attempts_in_flight") == 0
    # The attempts went over a few Dispatch streams (4 at most, the default), not a call
    # each; the streams stay open for the next run.
    assert 1 <= total(worker, "grpc_server_started_total", grpc_method="Dispatch") <= 4
    assert total(worker, "grpc_server_started_total", grpc_method="RunStep") == 0
    # Gateway: the calls this test made, with their codes.
    for method in ("CreateRun", "GetRun", "StreamRunEvents"):
        assert total(gateway, "grpc_server_handled_total", grpc_method=method, grpc_code="OK") >= 1
    assert total(gateway, "grpc_server_handled_total", grpc_method="CreateRun") == 1
    assert total(gateway, "grpc_server_handling_seconds_count", grpc_method="CreateRun") == 1
    assert total(gateway, "maestro_event_stream_followers") == 0
    # Sandbox: the stack's health checks were served and counted, and the gate's checks.
    assert total(sandbox, "grpc_server_handled_total", grpc_method="Check", grpc_code="OK") >= 1
    assert total(sandbox, "grpc_server_handled_total", grpc_method="RunChecks") == 1


async def test_errors_are_counted_with_their_status_code(tmp_path: Path) -> None:
    async with LocalStack(tmp_path / "stack", provider="offline") as stack:
        channel = gateway_channel(stack)
        try:
            gateway = gateway_pb2_grpc.MaestroServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await gateway.GetRun(gateway_pb2.GetRunRequest(name="runs/0123456789abcdef"))
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await gateway.CreateRun(
                    gateway_pb2.CreateRunRequest(workflow_name="nope", requirement="x"), timeout=10
                )
        finally:
            await channel.close(None)
        gateway_metrics = await scrape(stack.metrics_url(GATEWAY))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        total(
            gateway_metrics,
            "grpc_server_handled_total",
            grpc_method="GetRun",
            grpc_code="NOT_FOUND",
        )
        == 1
    )
    assert (
        total(
            gateway_metrics,
            "grpc_server_handled_total",
            grpc_method="CreateRun",
            grpc_code="INVALID_ARGUMENT",
        )
        == 1
    )


async def _eventually(url: str, ready: Any, attempts: int = 100):
    """Scrapes until `ready(samples)` (the meter counts just after each commit)."""
    for _ in range(attempts):
        samples = await scrape(url)
        if ready(samples):
            return samples
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never showed the expected samples")


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.arrived = asyncio.Condition()

    async def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    self.spans.append(
                        {
                            "service": service,
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "attributes": attributes,
                        }
                    )
        async with self.arrived:
            self.arrived.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    async def wait_for(self, ready: Any) -> None:
        async with asyncio.timeout(60), self.arrived:
            await self.arrived.wait_for(lambda: ready(self.spans))


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    server = grpc.aio.server()
    receiver = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield receiver, port
    await server.stop(None)


async def test_one_trace_follows_a_run_through_gateway_scheduler_and_worker(
    tmp_path: Path, collector: tuple[Collector, int]
) -> None:
    receiver, port = collector
    env = {
        **FAST_RETRIES,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    async with LocalStack(tmp_path / "stack", provider="offline", extra_env=env) as stack:
        run = await _offline_run(stack, workflow="sdlc-linear")
        run_id = run.name.removeprefix("runs/")
        step_ids = {s.step_id for s in worker_steps(run)}

        def complete(spans: list[dict[str, Any]]) -> bool:
            attempts = {
                s["attributes"].get("maestro.step_id")
                for s in spans
                if s["service"] == "persona_service" and s["name"] == "maestro.step_attempt"
            }
            return attempts >= step_ids

        await receiver.wait_for(complete)

    create = [
        s
        for s in receiver.spans
        if s["service"] == "gateway" and s["name"].endswith("MaestroService/CreateRun")
    ]
    assert len(create) == 1
    assert create[0]["attributes"]["maestro.run_id"] == run_id
    trace_id = create[0]["trace_id"]
    in_trace = [s for s in receiver.spans if s["trace_id"] == trace_id]
    assert {s["service"] for s in in_trace} >= {"gateway", "scheduler", "persona_service"}
    # The scheduler's dispatches to the worker, and the worker's side of each (an
    # attempt on a Dispatch stream carries its trace context), name the attempt.
    for service, name in (
        ("scheduler", "maestro.dispatch"),
        ("persona_service", "maestro.step_attempt"),
    ):
        spans = [s for s in in_trace if s["service"] == service and s["name"].endswith(name)]
        assert {s["attributes"]["maestro.step_id"] for s in spans} == step_ids, (service, name)
        assert {s["attributes"]["maestro.run_id"] for s in spans} == {run_id}
        assert all(s["attributes"]["maestro.attempt"] == 1 for s in spans)
    # Health checks and reflection make no spans.
    assert not [s for s in receiver.spans if "Health" in s["name"]]

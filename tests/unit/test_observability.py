"""Logs that rotate and cut long values; span attributes read from requests; the
scheduler meter's rule for the events it counts; metric names split as Prometheus
users expect."""

from __future__ import annotations

import json
import logging

import pytest

from maestro.api.gateway.v1 import gateway_pb2
from maestro.api.worker.v1 import worker_pb2
from maestro.core.log_setup import JsonFormatter, configure_logging, truncate
from maestro.core.metrics import split_method
from maestro.core.tracing import ATTEMPT, RUN_ID, STEP_ID, run_attributes, tracing_endpoint


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)


def test_long_values_are_cut_and_say_how_much_was_left_out():
    formatter = JsonFormatter("gateway", max_value_chars=100)
    requirement = "r" * 200_000
    line = json.loads(formatter.format(_record("run created for %s by %s", requirement, "ana")))
    message = line["message"]
    assert len(message) < 200
    assert "... [199900 more characters]" in message
    assert message.endswith("by ana")  # one long value leaves the rest readable
    assert truncate("short", 100) == "short"
    whole = json.loads(formatter.format(_record("x" * 1000)))["message"]
    assert whole == "x" * 400 + "... [600 more characters]"


def test_a_log_file_rotates_by_size_and_keeps_the_backups_asked_for(tmp_path, restore_logging):
    path = tmp_path / "logs" / "scheduler.log"
    configure_logging("scheduler", file=path, max_bytes=2000, backups=2, max_value_chars=100)
    log = logging.getLogger("rotation-test")
    for i in range(200):
        log.info("line %d %s", i, "y" * 50)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["scheduler.log", "scheduler.log.1", "scheduler.log.2"]
    assert all(p.stat().st_size <= 2000 for p in path.parent.iterdir())
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in path.parent.iterdir())
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["message"].startswith("line 199 ") and last["service"] == "scheduler"


def test_span_attributes_name_the_run_step_and_attempt_of_a_request():
    attempt = worker_pb2.ExecuteStepRequest(
        attempt=worker_pb2.StepAttempt(run_id="r1", step_id="backend", attempt=2)
    )
    assert run_attributes(attempt) == {RUN_ID: "r1", STEP_ID: "backend", ATTEMPT: 2}
    assert run_attributes(gateway_pb2.GetRunRequest(name="runs/r9")) == {RUN_ID: "r9"}
    assert run_attributes(gateway_pb2.Run(name="runs/r9/steps/qa")) == {
        RUN_ID: "r9",
        STEP_ID: "qa",
    }
    assert run_attributes(gateway_pb2.ListRunsRequest()) == {}
    assert run_attributes("not a message") == {}


def test_tracing_is_on_only_with_an_endpoint_and_not_disabled():
    assert tracing_endpoint({}) is None
    assert tracing_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == "http://c:4317"
    traces = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4317"}
    assert tracing_endpoint(traces) == "http://t:4317"
    assert tracing_endpoint({**traces, "OTEL_SDK_DISABLED": "true"}) is None


def test_methods_split_into_service_and_method():
    assert split_method("/maestro.api.gateway.v1.MaestroService/CreateRun") == (
        "maestro.api.gateway.v1.MaestroService",
        "CreateRun",
    )


def test_a_span_without_tracing_is_the_no_op_span():
    from opentelemetry import trace

    from maestro.core.tracing import span

    with span("maestro.step_attempt", {"maestro.step_id": "s"}) as current:
        assert current is trace.INVALID_SPAN
        assert not current.is_recording()

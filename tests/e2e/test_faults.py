"""Faults of the platform never fail a run: schedulers killed and paused, workers
restarted, a database locked or refusing writes. Real processes, real databases; the
only fake is the Anthropic API (slowed so that steps are in flight when the fault hits).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeAlias

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.credentials import read_local_token
from maestro.cli.gateway_client import GatewayClient
from maestro.cli.stack import GATEWAY, SCHEDULER, WORKER, LocalStack
from maestro.core.client import insecure_channel
from maestro.store import NewRun, open_store
from tests.e2e.channels import gateway_channel
from tests.e2e.events import TERMINAL, collect_events, event_type_name
from tests.fakes.anthropic_server import FakeAnthropic
from tests.support.databases import ADMIN_URL

LEASE_SECONDS = 2.0
CLAIM_SECONDS = 0.5
FAULT_ENV = {
    "MAESTRO_SCHEDULER_LEASE_SECONDS": str(LEASE_SECONDS),
    "MAESTRO_SCHEDULER_CLAIM_INTERVAL_SECONDS": str(CLAIM_SECONDS),
    "MAESTRO_SCHEDULER_PLATFORM_RETRY_INITIAL_SECONDS": "0.2",
    "MAESTRO_SCHEDULER_PLATFORM_RETRY_MAX_SECONDS": "1",
    "MAESTRO_SCHEDULER_DRAIN_SECONDS": "1",
    "MAESTRO_SCHEDULER_HEARTBEAT_TIMEOUT_SECONDS": "5",
    "MAESTRO_SCHEDULER_READINESS_INTERVAL_SECONDS": "0.3",
    "MAESTRO_WORKER_HEARTBEAT_INTERVAL_SECONDS": "0.2",
    "MAESTRO_WORKER_OVERLOAD_RETRY_AFTER_SECONDS": "0",
}

# Three document steps: one model call each, so a slowed fake keeps one in flight.
CHAIN = """
name: chain
steps:
  - id: requirements
    persona: requirements_analyst
  - id: architecture
    persona: solution_architect
    depends_on: [requirements]
  - id: review
    persona: code_reviewer
    depends_on: [architecture]
"""

Gateway: TypeAlias = "gateway_pb2_grpc.MaestroServiceAsyncStub"


@pytest.fixture
async def stack(
    tmp_path: Path, fake_anthropic: FakeAnthropic, database_url: str
) -> AsyncIterator[LocalStack]:
    async with _stack(tmp_path, fake_anthropic, database_url) as started:
        yield started


def _stack(tmp_path: Path, fake: FakeAnthropic, database_url: str, **kwargs: object) -> LocalStack:
    env = {
        "ANTHROPIC_API_KEY": "test-key",
        "MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake.base_url,
        **FAULT_ENV,
    }
    return LocalStack(
        tmp_path / "stack",
        provider="anthropic",
        extra_env=env,
        database_url=database_url,
        **kwargs,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def _gateway(stack: LocalStack) -> AsyncIterator[Gateway]:
    channel = gateway_channel(stack)
    try:
        yield gateway_pb2_grpc.MaestroServiceStub(channel)
    finally:
        await channel.close(None)


async def _create(gateway: Gateway, yaml: str = CHAIN, request_id: str = "") -> str:
    run = await gateway.CreateRun(
        gateway_pb2.CreateRunRequest(
            workflow_yaml=yaml, requirement="a todo list API", request_id=request_id or _rid()
        ),
        timeout=10,
    )
    return run.name


def _rid() -> str:
    return uuid.uuid4().hex


async def _eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Polls `check` until it holds; returns how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {within}s: {what}")


def _assert_clean_history(events: list[gateway_pb2.RunEvent], steps: int) -> None:
    """Dense sequences, one terminal event, every step's result recorded once."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert sum(e.type in TERMINAL for e in events) == 1
    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    succeeded = Counter(e.step_id for e in events if event_type_name(e) == "STEP_SUCCEEDED")
    assert len(succeeded) == steps and set(succeeded.values()) == {1}


async def test_a_run_survives_its_scheduler_killed_ten_times(
    stack: LocalStack, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_default_delay(0.8)
    async with _gateway(stack) as gateway:
        name = await _create(gateway)
        made = 0
        for _ in range(10):
            # Kill while a model call of this scheduler's is in flight: its dispatch is
            # lost with the scheduler.
            assert await fake_anthropic.wait_for_requests_async(made + 1, within=20)
            await asyncio.sleep(0.1)
            assert await stack.kill_service(SCHEDULER) == -signal.SIGKILL
            made = len(fake_anthropic.requests)
            await stack.start_service(SCHEDULER)
        fake_anthropic.set_default_delay(0)
        events = await collect_events(gateway, name, timeout=60)
        final = await gateway.GetRun(gateway_pb2.GetRunRequest(name=name), timeout=5)

    _assert_clean_history(events, steps=3)
    lost = [e for e in events if event_type_name(e) == "ATTEMPT_LOST"]
    assert len(lost) == 10, [e.message for e in lost]
    # Lost to the platform: announced, re-sent, and not counted against max_attempts.
    assert all(step.attempts == 1 for step in final.steps)
    starts = [e for e in events if event_type_name(e) == "STEP_STARTED"]
    assert len(starts) == 3 + 10
    resumed = [e for e in events if event_type_name(e) == "RUN_STARTED"]
    assert [e.attributes.get("redriven", "") for e in resumed] == ["", *["true"] * 10]


async def test_a_worker_killed_mid_step_costs_no_attempt(
    stack: LocalStack, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_default_delay(1.0)
    async with _gateway(stack) as gateway:
        name = await _create(gateway)
        assert await fake_anthropic.wait_for_requests_async(1, within=20)
        await stack.kill_service(WORKER)
        await stack.start_service(WORKER)
        fake_anthropic.set_default_delay(0)
        events = await collect_events(gateway, name, timeout=60)
        final = await gateway.GetRun(gateway_pb2.GetRunRequest(name=name), timeout=5)

    _assert_clean_history(events, steps=3)
    # The dispatch in flight was lost, and so were any sent while the worker restarted:
    # each is announced, none counts against the step's attempts.
    lost = [e for e in events if event_type_name(e) == "ATTEMPT_LOST"]
    assert lost and {(e.step_id, e.attributes["attempt"]) for e in lost} == {("requirements", "1")}
    assert all("worker" in e.attributes["reason"] for e in lost)
    assert [s.attempts for s in final.steps] == [1, 1, 1]


async def test_a_worker_rollout_finishes_the_attempt_in_flight(
    stack: LocalStack, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.set_default_delay(1.5)
    async with _gateway(stack) as gateway:
        name = await _create(gateway)
        assert await fake_anthropic.wait_for_requests_async(1, within=20)
        # SIGTERM: the worker stops taking attempts and finishes the one it has.
        assert await stack.stop_service(WORKER) == 0
        fake_anthropic.set_default_delay(0)
        await stack.start_service(WORKER)
        events = await collect_events(gateway, name, timeout=60)

    _assert_clean_history(events, steps=3)
    # The attempt in flight finished on the stopping worker (dispatch 1, never lost);
    # steps sent while it was down were lost and re-sent, as platform faults.
    done = next(e for e in events if event_type_name(e) == "STEP_SUCCEEDED")
    assert (done.step_id, done.attributes["dispatch"]) == ("requirements", "1")
    lost = [e for e in events if event_type_name(e) == "ATTEMPT_LOST"]
    assert "requirements" not in {e.step_id for e in lost}


async def test_a_stored_run_that_no_longer_loads_fails_at_once(
    stack: LocalStack, database_url: str
) -> None:
    await stack.stop_service(GATEWAY)
    await stack.stop_service(SCHEDULER)
    # A run recorded by an older Maestro whose persona has since been renamed.
    store = await open_store(database_url, writer=True)
    try:
        await store.create_run(
            NewRun(
                # Run ids are 16 lowercase hex digits (the gateway's names are strict).
                run_id="57a1e00000000001",
                workflow_name="old",
                spec_json='{"name": "old", "steps": [{"id": "a", "persona": "renamed_persona"}]}',
                requirement="x",
                provider="",
                request_id="",
                steps=(("a", "renamed_persona", "persona", ()),),
            ),
            owner=None,
        )
    finally:
        await store.close()
    started = time.monotonic()
    await stack.start_service(SCHEDULER)
    await stack.start_service(GATEWAY)
    async with _gateway(stack) as gateway:
        await _eventually(
            lambda: _state_is(gateway, "runs/57a1e00000000001", gateway_pb2.RUN_STATE_FAILED),
            within=5,
            what="the stale run fails",
        )
        run = await gateway.GetRun(gateway_pb2.GetRunRequest(name="runs/57a1e00000000001"))
        events = await collect_events(gateway, "runs/57a1e00000000001", timeout=5)
    # Failed while the scheduler started (before it even said it was serving).
    assert time.monotonic() - started < 10
    assert "no longer loads" in run.error and "renamed_persona" in run.error
    assert events[-1].type == gateway_pb2.EVENT_TYPE_RUN_FAILED


async def _state_is(gateway: Gateway, name: str, state: int) -> bool:
    run = await gateway.GetRun(gateway_pb2.GetRunRequest(name=name), timeout=5)
    return bool(run.state == state)


async def test_admission_caps_the_steps_in_flight_and_every_queued_run_finishes(
    tmp_path: Path, fake_anthropic: FakeAnthropic, database_url: str
) -> None:
    fake_anthropic.set_default_delay(0.15)
    parallel = """
name: fan
steps:
  - {id: a, persona: requirements_analyst}
  - {id: b, persona: solution_architect}
  - {id: c, persona: code_reviewer, depends_on: [a, b]}
"""
    stack = _stack(tmp_path, fake_anthropic, database_url)
    stack.extra_env["MAESTRO_SCHEDULER_MAX_STEPS_IN_FLIGHT"] = "2"
    async with stack, _gateway(stack) as gateway:
        names = await asyncio.gather(*(_create(gateway, parallel) for _ in range(10)))
        histories = await asyncio.gather(
            *(collect_events(gateway, name, timeout=90) for name in names)
        )
    for events in histories:
        _assert_clean_history(events, steps=3)
    kinds = Counter(event_type_name(e) for events in histories for e in events)
    assert kinds["STEP_QUEUED"] > 0 and kinds["RUN_QUEUED"] > 0
    # Never more than 2 dispatches at once, from the store's own record of them.
    store = await open_store(database_url)
    try:
        intervals = await store.db.read(
            lambda tx: [
                (row["start_time"], row["end_time"])
                for row in tx.all("SELECT start_time, end_time FROM dispatches")
            ]
        )
    finally:
        await store.close()
    assert len(intervals) == 30
    assert _max_overlap(intervals) == 2


def _max_overlap(intervals: list[tuple[int, int]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, change in points:
        current += change
        most = max(most, current)
    return most


# -- several schedulers on one PostgreSQL ------------------------------------------------


async def _owners(gateway: Gateway, names: list[str]) -> Counter[str]:
    """How many of these runs each scheduler drives now (from their latest RUN_STARTED)."""
    owners: Counter[str] = Counter()
    for name in names:
        events = []
        async for event in gateway.StreamRunEvents(
            gateway_pb2.StreamRunEventsRequest(name=name), timeout=5
        ):
            events.append(event)
            if event.type == gateway_pb2.EVENT_TYPE_STEP_STARTED:
                break
        started = [e for e in events if event_type_name(e) == "RUN_STARTED"]
        if started:
            owners[started[-1].attributes["scheduler"]] += 1
    return owners


def _service_of(stack: LocalStack, scheduler_id: str) -> str:
    """The local service name of a scheduler id (`host:pid:random`)."""
    pid = int(scheduler_id.split(":")[1])
    return next(name for name in stack.scheduler_names if stack.pid(name) == pid)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_killed_scheduler_s_runs_are_taken_over_within_the_lease(
    tmp_path: Path, fake_anthropic: FakeAnthropic, database_url: str
) -> None:
    fake_anthropic.set_default_delay(0.3)
    stack = _stack(tmp_path, fake_anthropic, database_url, schedulers=2)
    async with stack, _gateway(stack) as gateway:
        names = await asyncio.gather(*(_create(gateway) for _ in range(20)))
        assert await fake_anthropic.wait_for_requests_async(10, within=30)
        victim, _ = (await _owners(gateway, names)).most_common(1)[0]
        killed_at = time.time()
        await stack.kill_service(_service_of(stack, victim))
        histories = await asyncio.gather(
            *(collect_events(gateway, name, timeout=120) for name in names)
        )
    takeovers = []
    for events in histories:
        _assert_clean_history(events, steps=3)
        for event in events:
            if f"taken over from scheduler {victim}" in event.attributes.get("reason", ""):
                takeovers.append(event.time.ToDatetime().timestamp() - killed_at)
    assert takeovers, "the killed scheduler held no run in flight"
    # Taken over once its leases expired: within the lease plus the claim interval.
    assert max(takeovers) <= LEASE_SECONDS + CLAIM_SECONDS + 1.5


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_paused_scheduler_writes_nothing_for_the_runs_it_lost(
    tmp_path: Path, fake_anthropic: FakeAnthropic, database_url: str
) -> None:
    fake_anthropic.set_default_delay(0.5)
    stack = _stack(tmp_path, fake_anthropic, database_url, schedulers=2)
    async with stack, _gateway(stack) as gateway:
        names = await asyncio.gather(*(_create(gateway) for _ in range(8)))
        assert await fake_anthropic.wait_for_requests_async(4, within=30)
        victim, _ = (await _owners(gateway, names)).most_common(1)[0]
        paused = stack.pid(_service_of(stack, victim))
        assert paused is not None
        os.kill(paused, signal.SIGSTOP)
        try:
            # Past its lease: the other scheduler takes its runs over meanwhile.
            await asyncio.sleep(LEASE_SECONDS * 3)
        finally:
            os.kill(paused, signal.SIGCONT)
        histories = await asyncio.gather(
            *(collect_events(gateway, name, timeout=120) for name in names)
        )
    lost_runs = 0
    for events in histories:
        _assert_clean_history(events, steps=3)
        # Who dispatched what: (step, attempt, dispatch) -> scheduler.
        dispatcher = {
            (e.step_id, e.attributes["attempt"], e.attributes["dispatch"]): e.attributes[
                "scheduler"
            ]
            for e in events
            if event_type_name(e) == "STEP_STARTED"
        }
        reason = f"taken over from scheduler {victim}"
        takeover = next(
            (e.sequence for e in events if reason in e.attributes.get("reason", "")), None
        )
        if takeover is None:
            continue
        lost_runs += 1
        # Fencing: after the takeover, nothing that the paused owner's dispatches did is
        # recorded, and it starts nothing new.
        for event in events:
            if event.sequence <= takeover or "dispatch" not in event.attributes:
                continue
            key = (event.step_id, event.attributes["attempt"], event.attributes["dispatch"])
            assert dispatcher.get(key) != victim, (event_type_name(event), event.message)
    assert lost_runs > 0, "the paused scheduler held no run in flight"


# -- the database locked, and refusing writes ----------------------------------------------


class _Outage:
    """Makes the database refuse every write for a while, from outside the services."""

    def __init__(self, database_url: str, kind: str) -> None:
        self.url = database_url
        self.kind = kind
        self._release = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(target=self._hold, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10), "could not start the outage"

    def stop(self) -> None:
        self._release.set()
        assert self._thread is not None
        self._thread.join(30)

    def _hold(self, started: threading.Event) -> None:
        if self.url.startswith("sqlite:///"):
            path = self.url.removeprefix("sqlite:///")
            if self.kind == "locked":
                conn = sqlite3.connect(path, isolation_level=None)
                conn.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
                started.set()
                self._release.wait()
                conn.execute("ROLLBACK")
                conn.close()
            else:
                # Every write fails (as on a full disk): the files become immutable.
                files = [path, f"{path}-wal"]
                subprocess.run(["chattr", "+i", *files], check=True)
                started.set()
                self._release.wait()
                subprocess.run(["chattr", "-i", *files], check=True)
            return
        database = self.url.rsplit("/", 1)[1]
        if self.kind == "locked":
            with psycopg.connect(self.url) as pg:
                # Writers wait for this lock; readers (the gateway) do not.
                pg.execute("LOCK TABLE runs IN EXCLUSIVE MODE")
                started.set()
                self._release.wait()
            return
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
            _reconnect_all(admin, database)
            started.set()
            self._release.wait()
            admin.execute(f"ALTER DATABASE {database} RESET default_transaction_read_only")
            _reconnect_all(admin, database)


def _reconnect_all(admin: psycopg.Connection, database: str) -> None:
    """Ends every session of the database, so the services reconnect with its settings."""
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )


async def _health(address: str) -> int:
    channel = insecure_channel(address)
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
        return int(response.status)
    finally:
        await channel.close(None)


@pytest.mark.parametrize(("kind", "seconds"), [("locked", 25.0), ("read_only", 15.0)])
async def test_a_database_outage_delays_a_run_but_never_fails_it(
    stack: LocalStack,
    fake_anthropic: FakeAnthropic,
    database_url: str,
    kind: str,
    seconds: float,
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    fake_anthropic.set_default_delay(1.0)
    outage = _Outage(database_url, kind)
    async with _gateway(stack) as gateway:
        name = await _create(gateway)
        assert await fake_anthropic.wait_for_requests_async(1, within=20)
        outage.start()
        try:
            # The scheduler says it cannot do its job...
            await _eventually(
                lambda: _not(_health(stack.address(SCHEDULER)), serving),
                within=5,
                what="the scheduler reports NOT_SERVING",
            )
            # ...and a new run is refused at once, not after a long wait.
            refused: list[str] = []
            for _ in range(3):
                request_id = _rid()
                began = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _create(gateway, request_id=request_id)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() - began < 1.0
                refused.append(request_id)
            # Reads go on: the gateway answers from the store.
            during = await gateway.GetRun(gateway_pb2.GetRunRequest(name=name), timeout=5)
            assert during.state != gateway_pb2.RUN_STATE_FAILED
            await asyncio.sleep(max(0.0, seconds - 3))
        finally:
            await asyncio.to_thread(outage.stop)
        fake_anthropic.set_default_delay(0)
        await _eventually(
            lambda: _is(_health(stack.address(SCHEDULER)), serving),
            within=10,
            what="the scheduler is SERVING again",
        )
        events = await collect_events(gateway, name, timeout=60)
        # A run the client was told failed either does not exist, or a retry with the
        # same request_id returns it (and never makes a second one).
        for request_id in refused:
            again = await gateway.CreateRun(
                gateway_pb2.CreateRunRequest(
                    workflow_yaml=CHAIN, requirement="a todo list API", request_id=request_id
                ),
                timeout=10,
            )
            retried = await gateway.CreateRun(
                gateway_pb2.CreateRunRequest(
                    workflow_yaml=CHAIN, requirement="a todo list API", request_id=request_id
                ),
                timeout=10,
            )
            assert again.name == retried.name
    _assert_clean_history(events, steps=3)


async def _not(status: Awaitable[int], value: int) -> bool:
    try:
        return await status != value
    except grpc.aio.AioRpcError:
        return True


async def _is(status: Awaitable[int], value: int) -> bool:
    try:
        return await status == value
    except grpc.aio.AioRpcError:
        return False


async def test_the_cli_s_create_run_is_retried_until_the_scheduler_is_back(
    stack: LocalStack,
) -> None:
    await stack.stop_service(SCHEDULER)
    request_id = _rid()
    token = read_local_token(stack.data_dir)
    async with GatewayClient(stack.gateway_address, token=token, timeout=3) as client:
        create = asyncio.create_task(
            client.create_run(
                requirement="a todo list API", workflow_yaml=CHAIN, request_id=request_id
            )
        )
        await asyncio.sleep(1.5)  # the first tries are answered UNAVAILABLE
        assert not create.done()
        await stack.start_service(SCHEDULER)
        run = await create
        # Retried with the same request_id: one run, the one the client was given.
        again = await client.create_run(
            requirement="a todo list API", workflow_yaml=CHAIN, request_id=request_id
        )
    assert again.name == run.name

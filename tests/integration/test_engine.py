"""The scheduler's engine with a real store and a real worker over gRPC (in process).

A caller that goes away (deadline, disconnect, a second Ctrl-C) must never leave a
run recorded but undriven, or cancelled but not recorded as CANCELLED.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from maestro.api.worker.v1 import worker_pb2_grpc
from maestro.store import RunState, Store, open_store
from maestro.store.db import StoreUnavailable
from persona_service.llm import AnthropicProvider
from persona_service.models import Provider
from persona_service.offline import OfflineProvider
from persona_service.runner import StepRunner
from persona_service.servicer import WorkerServicer
from scheduler.engine import Engine
from scheduler.settings import SchedulerSettings
from scheduler.worker_client import WorkerPools
from tests.fakes.anthropic_server import FakeAnthropic
from tests.integration.sandbox_process import sandbox_process


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        fake.set_default_delay(60)  # every model call is still in flight when cancelled
        yield fake


@pytest.fixture
async def worker_address(fake_anthropic: FakeAnthropic) -> AsyncIterator[str]:
    providers: dict[str, Provider] = {
        "offline": OfflineProvider(),
        "anthropic": AnthropicProvider("test-key", "claude-x", base_url=fake_anthropic.base_url),
    }
    runner = StepRunner(providers, default_provider="offline", heartbeat_interval=0.5)
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(runner, 60), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)
    for provider in providers.values():
        await provider.aclose()


@pytest.fixture
def sandbox_address(tmp_path: Path) -> Iterator[str]:
    # The built-in workflows end in a gate: the checks run in a real sandbox.
    with sandbox_process(tmp_path / "sandbox") as sandbox:
        yield sandbox.address


@pytest.fixture
async def engine(
    database_url: str, worker_address: str, sandbox_address: str
) -> AsyncIterator[tuple[Engine, Store]]:
    settings = SchedulerSettings(
        database=database_url, worker_address=worker_address, sandbox_address=sandbox_address
    )
    store = await open_store(settings.database, writer=True)
    pools = WorkerPools({"*": worker_address}, heartbeat_timeout=10)
    scheduler = Engine(store, pools, settings)
    await scheduler.start()
    yield scheduler, store
    await scheduler.shutdown()
    await pools.close()
    await store.close()


async def _all_finished(store: Store, within: float) -> bool:
    """Whether every run reaches a final state within `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if not await store.unfinished_run_ids():
            return True
        await asyncio.sleep(0.02)
    return False


async def _unfinished_are_driven(scheduler: Engine, store: Store, within: float) -> bool:
    """Whether, within `within` seconds, every unfinished run is being driven."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if set(await store.unfinished_run_ids()) <= scheduler.driven_run_ids:
            return True
        await asyncio.sleep(0.02)
    return False


async def _cancel_after(task: asyncio.Task[Any], delay: float) -> None:
    # The moment of cancellation is chosen in time, not in event-loop turns: the store's
    # work happens on its database threads, at their own pace.
    await asyncio.sleep(delay)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_cancelled_create_run_never_leaves_a_run_undriven(
    engine: tuple[Engine, Store],
) -> None:
    scheduler, store = engine
    for step in range(20):
        delay = step * 0.001
        create = asyncio.create_task(
            scheduler.create_run(
                workflow_name="sdlc-linear",
                workflow_yaml="",
                requirement=f"attempt {step}",
                provider="offline",
                request_id=f"req-{step}",
            )
        )
        await _cancel_after(create, delay)
    # Every run that was recorded is driven to its end (offline runs take milliseconds).
    assert await _all_finished(store, within=30)
    runs = await store.list_runs(100)
    assert runs, "no run was recorded at all: the cancellations came too early"
    assert {run.state for run in runs} == {RunState.SUCCEEDED}


async def test_a_cancel_whose_caller_goes_away_still_ends_the_run_cancelled(
    engine: tuple[Engine, Store], fake_anthropic: FakeAnthropic
) -> None:
    scheduler, store = engine
    cancel_points = tuple(step * 0.002 for step in range(15))
    for number, delay in enumerate(cancel_points, start=1):
        accepted = await scheduler.create_run(
            workflow_name="sdlc-linear",
            workflow_yaml="",
            requirement=f"attempt {number}",
            provider="anthropic",
            request_id="",
        )
        run_id = accepted.run_id
        assert await fake_anthropic.wait_for_requests_async(number, within=30)
        cancel = asyncio.create_task(scheduler.cancel_run(run_id))
        await _cancel_after(cancel, delay)
    # A cancel cancelled before it reached the engine changes nothing (that run goes
    # on); one that got further must finish the job. Never: cancelled but unrecorded.
    assert await _unfinished_are_driven(scheduler, store, within=10)
    runs = await store.list_runs(100)
    assert len(runs) == len(cancel_points)
    assert RunState.CANCELLED in {run.state for run in runs}
    assert {run.state for run in runs} <= {RunState.CANCELLED, RunState.RUNNING}


async def test_a_retried_create_run_is_answered_while_writes_fail_fast(
    engine: tuple[Engine, Store],
) -> None:
    # A client retries after a lost answer, often while the database is struggling:
    # the retry is answered by a read, not refused like a new run's write would be.
    scheduler, store = engine
    request = {
        "workflow_name": "sdlc-linear",
        "workflow_yaml": "",
        "requirement": "a retried request",
        "provider": "offline",
        "request_id": "alice/retried",
    }
    first = await scheduler.create_run(**request)
    assert first.created is not None
    assert await _all_finished(store, within=60)
    store.db.outage = StoreUnavailable("the database is unavailable: database is locked")
    try:
        again = await scheduler.create_run(**request)
        with pytest.raises(StoreUnavailable):
            await scheduler.create_run(**{**request, "request_id": "alice/new"})
    finally:
        store.db.outage = None
    assert (again.run_id, again.created) == (first.run_id, None)

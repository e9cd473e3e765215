"""The measurements: LocalStacks driven over real gRPC, timed from the client side.

Each `measure_*` function starts the stack it needs, measures, and stops it (also on
errors and cancellation). The results are plain data; `bench.tables` turns them into
tables.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench import procs
from bench.client import (
    RPC_TIMEOUT,
    Received,
    RunObservation,
    create_run,
    follow,
    observe_run,
    type_name,
)
from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.stack import GATEWAY, SERVICES, LocalStack
from maestro.core.client import insecure_channel
from tests.fakes.anthropic_server import FakeAnthropic

if TYPE_CHECKING:
    from bench.client import Stub

BENCH_CLIENT = "bench client"
# The fake model "thinks" far longer than any cancellation sample takes.
FAKE_MODEL_DELAY_SECONDS = 60.0
FAKE_REQUEST_WAIT_SECONDS = 30.0


class BenchError(RuntimeError):
    """The system under test did not behave as the bench needs (e.g. no cancel event)."""


@dataclass(frozen=True)
class Config:
    """What to measure and how much; `bench.bench_runs.parse_args` explains each."""

    runs: int
    concurrency: tuple[int, ...]
    throughput_runs: int
    startups: int
    cancels: int
    idle_streams: int
    idle_window: float
    poll_seconds: float
    compare_poll_seconds: float
    run_timeout: float
    budget: float
    out: Path
    workdir: Path | None


def note(message: str) -> None:
    """Progress on stderr, so stdout holds only the tables."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- stacks ---------------------------------------------------------------------------


class TimedStack(LocalStack):
    """A LocalStack that records how long each service took to become healthy."""

    def __init__(
        self, data_dir: Path, *, provider: str, extra_env: Mapping[str, str] | None = None
    ) -> None:
        """Prepares the stack; see LocalStack."""
        super().__init__(data_dir, provider=provider, extra_env=extra_env)
        self.start_seconds: dict[str, float] = {}

    async def start_service(self, name: str) -> None:
        """Starts one service like LocalStack does, timing it until it is healthy."""
        began = time.perf_counter()
        await super().start_service(name)
        self.start_seconds[name] = time.perf_counter() - began

    def pids(self) -> dict[str, int]:
        """Each running service's process id.

        LocalStack has no public accessor for its children; reading its private table
        is read-only and keeps stack.py untouched.
        """
        return {name: self._running[name].process.pid for name in SERVICES}


@asynccontextmanager
async def open_stack(
    data_dir: Path, *, provider: str, extra_env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[TimedStack, Stub]]:
    """Starts a stack and a gateway client; stops both on the way out."""
    stack = TimedStack(data_dir, provider=provider, extra_env=extra_env)
    async with stack:
        channel = insecure_channel(stack.gateway_address)
        try:
            yield stack, gateway_pb2_grpc.MaestroServiceStub(channel)
        finally:
            await channel.close(None)


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each service and by this bench process."""
    snapshot = {name: procs.read_cpu_seconds(pid) for name, pid in pids.items()}
    snapshot[BENCH_CLIENT] = time.process_time()
    return snapshot


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds used between two snapshots, per process."""
    return {name: after[name] - before[name] for name in before}


def memory_of(pids: Mapping[str, int]) -> dict[str, procs.Memory]:
    """VmRSS and VmHWM of each service."""
    return {name: procs.read_memory(pid) for name, pid in pids.items()}


# -- start-up -------------------------------------------------------------------------


@dataclass
class StartupResults:
    """Seconds until healthy (per service and in all) and to stop, per fresh stack."""

    per_service: dict[str, list[float]] = field(
        default_factory=lambda: {name: [] for name in SERVICES}
    )
    totals: list[float] = field(default_factory=list)
    stops: list[float] = field(default_factory=list)


async def measure_startups(config: Config, workdir: Path) -> StartupResults:
    """Starts and stops fresh offline stacks, each on a new empty database."""
    results = StartupResults()
    for index in range(config.startups):
        stack = TimedStack(workdir / f"startup-{index}", provider="offline")
        began = time.perf_counter()
        await stack.start()  # stops what it started if it fails
        results.totals.append(time.perf_counter() - began)
        for name in SERVICES:
            results.per_service[name].append(stack.start_seconds[name])
        began = time.perf_counter()
        await stack.stop()
        results.stops.append(time.perf_counter() - began)
        note(f"start-up {index + 1}/{config.startups}: {results.totals[-1]:.2f}s")
    return results


# -- offline runs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """Runs driven at one concurrency."""

    concurrency: int
    observations: list[RunObservation]
    wall_seconds: float
    cpu: dict[str, float]


@dataclass
class OfflineResults:
    """Everything measured on the main offline stack."""

    sequential: list[RunObservation] = field(default_factory=list)
    sequential_cpu: dict[str, float] = field(default_factory=dict)
    levels: list[Level] = field(default_factory=list)
    memory_started: dict[str, procs.Memory] = field(default_factory=dict)
    memory_after: dict[str, procs.Memory] = field(default_factory=dict)
    database_live: dict[str, int] = field(default_factory=dict)
    database_stopped: int = 0
    rows: dict[str, int] = field(default_factory=dict)


async def run_sequentially(stub: Stub, count: int, timeout: float) -> list[RunObservation]:
    """Runs one at a time: each starts after the previous one's terminal event."""
    observations = []
    for _ in range(count):
        observations.append(await observe_run(stub, timeout=timeout))
    return observations


async def run_closed_loop(
    stub: Stub, concurrency: int, total: int, timeout: float
) -> tuple[list[RunObservation], float]:
    """Keeps `concurrency` runs in flight until `total` have finished.

    Returns:
        The observations and the wall time from the first CreateRun to the last end.
    """
    tickets = iter(range(total))  # shared: each lane takes the next run until none is left
    observations: list[RunObservation] = []

    async def lane() -> None:
        for _ in tickets:
            observations.append(await observe_run(stub, timeout=timeout))

    began = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(lane())
    return observations, time.perf_counter() - began


def count_rows(database: Path) -> dict[str, int]:
    """Row counts and stored artifact bytes, read-only, after the stack stopped."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:

        def scalar(sql: str) -> int:
            return int(db.execute(sql).fetchone()[0] or 0)

        return {
            "runs": scalar("SELECT COUNT(*) FROM runs"),
            "events": scalar("SELECT COUNT(*) FROM events"),
            "artifacts": scalar("SELECT COUNT(*) FROM artifacts"),
            "artifact bytes": scalar("SELECT SUM(size_bytes) FROM artifacts"),
        }


def database_files(database: Path) -> dict[str, int]:
    """Sizes of the SQLite file and its WAL and shared-memory companions."""
    return {
        suffix or "db": procs.file_size(database.with_name(database.name + suffix))
        for suffix in ("", "-wal", "-shm")
    }


async def measure_offline(config: Config, workdir: Path) -> OfflineResults:
    """Sequential runs, then each concurrency level, on one offline stack."""
    results = OfflineResults()
    env = {"MAESTRO_GATEWAY_EVENT_POLL_SECONDS": str(config.poll_seconds)}
    async with open_stack(workdir / "offline", provider="offline", extra_env=env) as (stack, stub):
        pids = stack.pids()
        results.memory_started = memory_of(pids)
        before = cpu_snapshot(pids)
        results.sequential = await run_sequentially(stub, config.runs, config.run_timeout)
        results.sequential_cpu = cpu_delta(before, cpu_snapshot(pids))
        note(f"{config.runs} sequential runs done")
        for concurrency in config.concurrency:
            total = max(config.throughput_runs, concurrency)
            before = cpu_snapshot(pids)
            observations, wall = await run_closed_loop(stub, concurrency, total, config.run_timeout)
            cpu = cpu_delta(before, cpu_snapshot(pids))
            results.levels.append(Level(concurrency, observations, wall, cpu))
            note(f"concurrency {concurrency}: {total} runs in {wall:.2f}s")
        results.memory_after = memory_of(pids)
        results.database_live = database_files(stack.database_path)
    results.database_stopped = procs.file_size(stack.database_path)
    results.rows = await asyncio.to_thread(count_rows, stack.database_path)
    return results


async def measure_poll_comparison(
    config: Config, workdir: Path
) -> tuple[list[RunObservation], dict[str, float]]:
    """The sequential runs again on a stack whose gateway polls the store more often."""
    env = {"MAESTRO_GATEWAY_EVENT_POLL_SECONDS": str(config.compare_poll_seconds)}
    async with open_stack(workdir / "fast-poll", provider="offline", extra_env=env) as (
        stack,
        stub,
    ):
        pids = stack.pids()
        before = cpu_snapshot(pids)
        observations = await run_sequentially(stub, config.runs, config.run_timeout)
        cpu = cpu_delta(before, cpu_snapshot(pids))
    note(f"{config.runs} sequential runs with a {config.compare_poll_seconds}s poll done")
    return observations, cpu


# -- cancellation and idle streams (worker stuck in a fake Anthropic call) -------------


@dataclass
class AnthropicResults:
    """What was measured on the stack whose worker calls FakeAnthropic."""

    cancel_rpc: list[float] = field(default_factory=list)
    cancel_event: list[float] = field(default_factory=list)
    gateway_cpu_idle: float = math.nan
    gateway_cpu_streams: float = math.nan
    memory_started: dict[str, procs.Memory] = field(default_factory=dict)
    memory_after: dict[str, procs.Memory] = field(default_factory=dict)


async def start_stalled_run(stub: Stub, fake: FakeAnthropic) -> gateway_pb2.Run:
    """Creates a run and returns once its first model call is in flight at the fake."""
    expected = len(fake.requests) + 1
    run = await create_run(stub)
    if not await fake.wait_for_requests_async(expected, within=FAKE_REQUEST_WAIT_SECONDS):
        raise BenchError(f"{run.name}: no model call reached the fake Anthropic API")
    return run


async def cancel_once(stub: Stub, fake: FakeAnthropic, timeout: float) -> tuple[float, float]:
    """Cancels a run whose worker is inside a model call.

    Returns:
        Seconds from the CancelRun call until it returned, and until the client
        received the RUN_CANCELLED event on a stream opened before the cancel.
    """
    expected = len(fake.requests) + 1
    run = await create_run(stub)
    stream = asyncio.create_task(follow(stub, run.name, timeout=timeout))
    try:
        if not await fake.wait_for_requests_async(expected, within=FAKE_REQUEST_WAIT_SECONDS):
            raise BenchError(f"{run.name}: no model call reached the fake Anthropic API")
        began = time.perf_counter()
        await stub.CancelRun(gateway_pb2.CancelRunRequest(name=run.name), timeout=RPC_TIMEOUT)
        returned = time.perf_counter()
        received = await stream
    finally:
        stream.cancel()  # a no-op once it has ended; ends it on the error paths
    last = received[-1]
    if last.event.type != gateway_pb2.EVENT_TYPE_RUN_CANCELLED:
        raise BenchError(f"{run.name} ended {type_name(last.event.type)}, not RUN_CANCELLED")
    return returned - began, last.mono - began


async def gateway_cpu_share(pid: int, window: float) -> float:
    """The gateway's CPU use over a fixed window, as a fraction of one core.

    The sleep is the sampling window of a rate, not a wait for some condition.
    """
    before = procs.read_cpu_seconds(pid)
    await asyncio.sleep(window)
    return (procs.read_cpu_seconds(pid) - before) / window


def _setter(event: asyncio.Event) -> Callable[[Received], None]:
    """A stream callback that sets `event` (at the first event, and harmlessly after)."""
    return lambda _: event.set()


async def _until_live(stream: asyncio.Task[list[Received]], first_event: asyncio.Event) -> None:
    """Waits until the stream delivered its first event; fails if it ended before that.

    A stream that has delivered the replayed events is in its polling loop.
    """
    waiter = asyncio.ensure_future(first_event.wait())
    try:
        await asyncio.wait({stream, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not first_event.is_set():
        stream.result()  # raises the stream's error, if it had one
        raise BenchError("a live stream ended before it delivered any event")


async def measure_idle_streams(
    stub: Stub, fake: FakeAnthropic, pid: int, config: Config, results: AnthropicResults
) -> None:
    """Gateway CPU with no stream, then with N live streams on a run that is stalled.

    A stalled run commits nothing, so whatever the gateway burns is the cost of tailing
    the store by polling.
    """
    run = await start_stalled_run(stub, fake)
    results.gateway_cpu_idle = await gateway_cpu_share(pid, config.idle_window)
    live = [asyncio.Event() for _ in range(config.idle_streams)]
    streams = [
        asyncio.create_task(
            follow(stub, run.name, timeout=config.run_timeout, on_event=_setter(event))
        )
        for event in live
    ]
    try:
        await asyncio.gather(*map(_until_live, streams, live))
        results.gateway_cpu_streams = await gateway_cpu_share(pid, config.idle_window)
        await stub.CancelRun(gateway_pb2.CancelRunRequest(name=run.name), timeout=RPC_TIMEOUT)
        await asyncio.gather(*streams)  # each ends after RUN_CANCELLED
    finally:
        for stream in streams:
            stream.cancel()


async def measure_anthropic(config: Config, workdir: Path) -> AnthropicResults:
    """Idle-stream polling cost and cancellation latency, worker stuck at FakeAnthropic."""
    results = AnthropicResults()
    with FakeAnthropic() as fake:
        fake.set_default_delay(FAKE_MODEL_DELAY_SECONDS)
        env = {
            "ANTHROPIC_API_KEY": "bench-key",
            "MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake.base_url,
            "MAESTRO_GATEWAY_EVENT_POLL_SECONDS": str(config.poll_seconds),
        }
        async with open_stack(workdir / "anthropic", provider="anthropic", extra_env=env) as (
            stack,
            stub,
        ):
            pids = stack.pids()
            results.memory_started = memory_of(pids)
            await measure_idle_streams(stub, fake, pids[GATEWAY], config, results)
            note("idle-stream polling cost measured")
            for _ in range(config.cancels):
                rpc, event = await cancel_once(stub, fake, config.run_timeout)
                results.cancel_rpc.append(rpc)
                results.cancel_event.append(event)
            note(f"{config.cancels} cancellations done")
            results.memory_after = memory_of(pids)
    return results

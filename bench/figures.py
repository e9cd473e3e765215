"""The other figures of issues 5 and 6, each measured over a real stack.

Event delivery to 100 followers of one run, 500 idle streams, 200 concurrent offline
runs, start-up, CreateRun of a 1,000-step workflow and the parse of a 65 KB workflow.
Each function measures one figure and returns plain data; `bench.report` makes the
tables.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bench import procs
from bench.client import (
    RPC_TIMEOUT,
    Received,
    RunObservation,
    bench_request,
    builtin_request,
    create_run,
    event_wall_time,
    follow,
    freeze_bench_heap,
    observe_run,
    run_error,
)
from bench.rounds import BenchError
from bench.stacks import TimedStack, cpu_delta, cpu_snapshot, make_stack, memory_of
from bench.workloads import PERSONA, Step, Workload, chain, w1
from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.credentials import read_local_token
from maestro.cli.stack import SANDBOX, SERVICES, LocalStack
from maestro.core.client import insecure_channel
from maestro.workflow import builtin_workflow_yaml, parse_workflow_yaml

if TYPE_CHECKING:
    from bench.client import Stub

Note = Callable[[str], None]


async def _with_channels(
    stack: LocalStack, count: int, work: Callable[[list[Stub]], Awaitable[None]]
) -> None:
    """Runs `work` with `count` gateway stubs, each on its own channel (connection),
    presenting the stack's own token (the gateway needs one)."""
    token = read_local_token(stack.data_dir)
    channels = [insecure_channel(stack.gateway_address, token=token) for _ in range(count)]
    try:
        await work([gateway_pb2_grpc.MaestroServiceStub(channel) for channel in channels])
    finally:
        await asyncio.gather(*(channel.close(None) for channel in channels))


def _delays(received: Sequence[Received], opened_wall: float) -> list[float]:
    """Receipt minus event time, for events committed after the stream was opened."""
    return [
        r.wall - event_wall_time(r.event)
        for r in received
        if event_wall_time(r.event) >= opened_wall
    ]


async def _follow_delays(
    stub: Stub, run_name: str, timeout: float, batched: bool
) -> tuple[list[float], int]:
    """The delays of one follower's events, and how many messages brought them."""
    opened = time.time()
    received = await follow(stub, run_name, timeout=timeout, batched=batched)
    return _delays(received, opened), len({r.message for r in received})


# -- event delivery to many followers of one run ----------------------------------------


@dataclass
class FollowerResults:
    followers: int
    steps: int
    batched: bool
    delays: list[float] = field(default_factory=list)
    messages: int = 0
    """Messages the followers received (events, when not batched)."""
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)


def follower_workload(steps: int, sleep_ms: int) -> Workload:
    return Workload("followers", f"a chain of {steps} steps", tuple(chain(steps, sleep_ms)), False)


async def measure_followers(
    stack: TimedStack,
    *,
    followers: int,
    steps: int,
    sleep_ms: int,
    rounds: int,
    timeout: float,
    batched: bool = True,
) -> FollowerResults:
    """`followers` streams (each on its own connection) follow one run from its start,
    by StreamRunEventBatches or (`batched` false) by StreamRunEvents."""
    results = FollowerResults(followers, steps, batched)
    request = bench_request(follower_workload(steps, sleep_ms).workflow_yaml())
    pids = stack.pids()

    async def once(stubs: list[Stub]) -> None:
        before = cpu_snapshot(pids)
        began = time.perf_counter()
        run = await create_run(stubs[0], request)
        per_stream = await asyncio.gather(
            *(_follow_delays(stub, run.name, timeout, batched) for stub in stubs)
        )
        results.wall += time.perf_counter() - began
        for name, seconds in cpu_delta(before, cpu_snapshot(pids)).items():
            results.cpu[name] = results.cpu.get(name, 0.0) + seconds
        for delays, messages in per_stream:
            results.delays.extend(delays)
            results.messages += messages

    for _ in range(rounds):
        freeze_bench_heap()
        await _with_channels(stack, followers, once)
    return results


# -- idle streams, then a cancel delivered to all of them -------------------------------


@dataclass
class IdleResults:
    streams: int
    window: float
    cpu_without: dict[str, float] = field(default_factory=dict)
    """CPU share of a core of each process over the window, no stream open."""
    cpu_with: dict[str, float] = field(default_factory=dict)
    cancel_rpc: float = 0.0
    cancel_delays: list[float] = field(default_factory=list)
    """RUN_CANCELLED: receipt on each idle stream minus the event's time."""


STALLED = Workload(
    "stalled", "one step sleeping 10 minutes", (Step("stalled", (), 600_000),), False
)


def _stalled_yaml() -> str:
    document = json.loads(STALLED.workflow_yaml())
    document["default_timeout"] = "15m"
    return json.dumps(document)


async def _cpu_share(pids: dict[str, int], window: float) -> dict[str, float]:
    """Each process's CPU use over a fixed window, as a fraction of one core.

    The sleep is the sampling window of a rate, not a wait for some condition.
    """
    before = cpu_snapshot(pids)
    await asyncio.sleep(window)
    return {name: used / window for name, used in cpu_delta(before, cpu_snapshot(pids)).items()}


PROGRESS_WAIT_SECONDS = 5.0


async def _until_progress(stub: Stub, run_name: str, timeout: float) -> None:
    """Returns once the stalled step is in the worker: at its progress note, or (for a
    store that records no note at once) 5 s after its STEP_STARTED."""
    request = gateway_pb2.StreamRunEventsRequest(name=run_name)
    call = stub.StreamRunEvents(request, timeout=timeout)
    events = aiter(call)
    try:
        async for event in events:
            if event.type == gateway_pb2.EVENT_TYPE_STEP_STARTED:
                break
        else:
            raise BenchError(f"{run_name}: the stream ended before the step started")
        with suppress(TimeoutError):
            async with asyncio.timeout(PROGRESS_WAIT_SECONDS):
                async for event in events:
                    if event.type == gateway_pb2.EVENT_TYPE_STEP_PROGRESS:
                        return
    finally:
        call.cancel()


async def measure_idle_streams(
    stack: TimedStack, *, streams: int, window: float, timeout: float
) -> IdleResults:
    """Gateway CPU with no stream and with `streams` open on a stalled run; then the
    stalled run is cancelled and RUN_CANCELLED's delivery to every stream timed."""
    results = IdleResults(streams, window)
    pids = stack.pids()
    channels = max(1, streams // 5)

    async def work(stubs: list[Stub]) -> None:
        stub = stubs[0]
        request = gateway_pb2.CreateRunRequest(
            workflow_yaml=_stalled_yaml(), requirement="benchmark", provider="bench"
        )
        run = await create_run(stub, request)
        await _until_progress(stub, run.name, timeout)
        results.cpu_without = await _cpu_share(pids, window)
        live = [asyncio.Event() for _ in range(streams)]
        opened = time.time()
        tasks = [
            asyncio.create_task(
                follow(
                    stubs[i % len(stubs)],
                    run.name,
                    timeout=timeout,
                    on_event=_setter(live[i]),
                )
            )
            for i in range(streams)
        ]
        try:
            await _all_live(tasks, live)
            results.cpu_with = await _cpu_share(pids, window)
            began = time.perf_counter()
            await stub.CancelRun(gateway_pb2.CancelRunRequest(name=run.name), timeout=RPC_TIMEOUT)
            results.cancel_rpc = time.perf_counter() - began
            for received in await asyncio.gather(*tasks):
                last = received[-1]
                if last.event.type != gateway_pb2.EVENT_TYPE_RUN_CANCELLED:
                    raise BenchError(f"{run.name}: {await run_error(stub, run.name)}")
                results.cancel_delays.extend(_delays([last], opened))
        finally:
            for task in tasks:
                task.cancel()

    await _with_channels(stack, channels, work)
    return results


def _setter(event: asyncio.Event) -> Callable[[Received], None]:
    """A stream callback that sets `event` (at the first event, and harmlessly after)."""
    return lambda _: event.set()


async def _all_live(tasks: list[asyncio.Task[list[Received]]], live: list[asyncio.Event]) -> None:
    """Waits until every stream delivered its replay; fails if one ended first."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(
        asyncio.gather(*(event.wait() for event in live))
    )
    watched: set[asyncio.Future[Any]] = {waiter, *tasks}
    try:
        while not waiter.done():
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done():
                    task.result()  # raises the stream's error
                    raise BenchError("an idle stream ended before the run did")
    finally:
        waiter.cancel()


# -- many concurrent offline runs -------------------------------------------------------


def without_gates(workflow_yaml: str) -> str:
    """The workflow with its gate steps left out: each step that depended on a gate
    depends on what the gate depended on instead (through gates after gates), so the
    order is kept."""
    data = yaml.safe_load(workflow_yaml)
    gates = {s["id"]: s.get("depends_on", []) for s in data["steps"] if s.get("kind") == "gate"}

    def kept_dependencies(dependency: str) -> list[str]:
        if dependency not in gates:
            return [dependency]
        return [d for upstream in gates[dependency] for d in kept_dependencies(upstream)]

    kept = []
    for step in data["steps"]:
        if step["id"] in gates:
            continue
        deps = step.get("depends_on", [])
        step["depends_on"] = list(dict.fromkeys(d for dep in deps for d in kept_dependencies(dep)))
        kept.append(step)
    data["name"] = f"{data['name']}-without-gates"
    data["steps"] = kept
    return yaml.safe_dump(data, sort_keys=False)


def ungated_request() -> gateway_pb2.CreateRunRequest:
    """A run of the default workflow without its gate, on the workers' default provider:
    what the engine does for those runs apart from the sandbox's checks."""
    request = builtin_request()
    workflow_yaml = without_gates(builtin_workflow_yaml(request.workflow_name))
    return gateway_pb2.CreateRunRequest(
        workflow_yaml=workflow_yaml, requirement=request.requirement
    )


@dataclass
class ConcurrentResults:
    runs: int
    workflow: str
    """What each run is: `sdlc-parallel`, or that workflow without its gate."""
    observations: list[RunObservation] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    memory_before: dict[str, procs.Memory] = field(default_factory=dict)
    memory_after: dict[str, procs.Memory] = field(default_factory=dict)
    checks_cpu: float = 0.0
    """CPU seconds of the sandbox's jails and the tools in them (its waited-for children)."""


async def measure_concurrent_runs(
    stack: TimedStack, *, runs: int, timeout: float, gated: bool = True
) -> ConcurrentResults:
    """`runs` offline runs of the default workflow, all created at once, each followed.

    Args:
        gated: False leaves the workflow's gate out (see `ungated_request`).
    """
    default = builtin_request()
    request = default if gated else ungated_request()
    label = default.workflow_name if gated else f"{default.workflow_name} without its gate"
    results = ConcurrentResults(runs, label)
    pids = stack.pids()
    results.memory_before = memory_of(pids)

    async def work(stubs: list[Stub]) -> None:
        before = cpu_snapshot(pids)
        checks_before = procs.read_children_cpu_seconds(pids[SANDBOX])
        began = time.perf_counter()
        results.observations = list(
            await asyncio.gather(
                *(
                    observe_run(stubs[i % len(stubs)], timeout=timeout, request=request)
                    for i in range(runs)
                )
            )
        )
        results.wall = time.perf_counter() - began
        results.cpu = cpu_delta(before, cpu_snapshot(pids))
        results.checks_cpu = procs.read_children_cpu_seconds(pids[SANDBOX]) - checks_before

    await _with_channels(stack, max(1, runs // 10), work)
    results.memory_after = memory_of(pids)
    return results


# -- start-up -----------------------------------------------------------------------------


@dataclass
class StartupResults:
    per_service: dict[str, list[float]] = field(
        default_factory=lambda: {name: [] for name in SERVICES}
    )
    totals: list[float] = field(default_factory=list)
    stops: list[float] = field(default_factory=list)
    worker_rss_kib: list[int] = field(default_factory=list)


ANTHROPIC_ENV = {
    # Configured, never called: no step runs on this stack. Port 9 (discard) on
    # loopback, so nothing could leave the machine even by mistake.
    "ANTHROPIC_API_KEY": "bench-not-a-real-key",
    "MAESTRO_WORKER_ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
}


async def measure_startup(
    data_dir: Path, url: str, *, anthropic: bool, results: StartupResults
) -> None:
    """Starts and stops one fresh stack, timing each service until it is healthy."""
    stack = make_stack(
        data_dir,
        url,
        provider="anthropic" if anthropic else "offline",
        extra_env=ANTHROPIC_ENV if anthropic else None,
    )
    began = time.perf_counter()
    await stack.start()  # stops what it started if it fails
    results.totals.append(time.perf_counter() - began)
    for name in SERVICES:
        results.per_service[name].append(stack.start_seconds[name])
    results.worker_rss_kib.append(memory_of(stack.pids())[SERVICES[0]].rss_kib)
    began = time.perf_counter()
    await stack.stop()
    results.stops.append(time.perf_counter() - began)


# -- CreateRun of a 1,000-step workflow, and parsing a 65 KB one --------------------------


@dataclass
class CreateResults:
    steps: int
    yaml_bytes: int
    latencies: list[float] = field(default_factory=list)


async def measure_create_large(stub: Stub, *, samples: int, timeout: float) -> CreateResults:
    """CreateRun of W1 (1,000 no-op steps); each run is followed to its end before the
    next sample, so every call finds an idle stack."""
    workload = w1()
    yaml_text = workload.workflow_yaml()
    results = CreateResults(workload.size, len(yaml_text.encode()))
    for _ in range(samples):
        began = time.perf_counter()
        run = await create_run(stub, bench_request(yaml_text))
        results.latencies.append(time.perf_counter() - began)
        received = await follow(stub, run.name, timeout=timeout)
        if received[-1].event.type != gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED:
            raise BenchError(f"{run.name}: {await run_error(stub, run.name)}")
    return results


def workflow_of_size(target_bytes: int) -> str:
    """A block-style YAML workflow (as people write them) of at least `target_bytes`:
    layers of 10 steps, each depending on two steps of the layer before."""
    lines = ["name: parse-bench", "description: a large workflow for the parse bench", "steps:"]
    layer = 0
    while len("\n".join(lines)) < target_bytes:
        for i in range(10):
            lines += [f"  - id: s{layer}-{i}", f"    persona: {PERSONA}"]
            if layer:
                lines.append(f"    depends_on: [s{layer - 1}-{i}, s{layer - 1}-{(i + 1) % 10}]")
            lines += ["    timeout: 5m", "    instructions: sleep 10ms"]
        layer += 1
    return "\n".join(lines) + "\n"


@dataclass
class ParseResults:
    yaml_bytes: int
    steps: int
    seconds: list[float] = field(default_factory=list)


def measure_parse(target_bytes: int, samples: int) -> ParseResults:
    """Parses (YAML, then validation) the same workflow `samples` times, in-process."""
    text = workflow_of_size(target_bytes)
    results = ParseResults(len(text.encode()), 0)
    for _ in range(samples):
        began = time.perf_counter()
        spec = parse_workflow_yaml(text, source="bench")
        results.seconds.append(time.perf_counter() - began)
        results.steps = len(spec.steps)
    return results

"""W1-W4, round by round: Maestro on each backend beside the floors, interleaved.

In every round each workload is run once by every contender, in an order that rotates
from round to round, so a slow minute of the shared machine lands on all of them
alike. A contender that fails fails the bench: no sample is ever a failed run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.client import (
    bench_request,
    create_run,
    event_wall_time,
    follow,
    freeze_bench_heap,
    run_error,
    type_name,
)
from bench.stacks import BENCH_CLIENT, TimedStack, cpu_delta, cpu_snapshot
from bench.timeline import Stamp, Timeline, timeline
from bench.workloads import Workload
from maestro.api.gateway.v1 import gateway_pb2
from maestro.cli.stack import SERVICES

if TYPE_CHECKING:
    from bench.client import Stub

ASYNCIO, GRPC, LANGGRAPH = "asyncio floor", "gRPC floor", "LangGraph"


def maestro_name(backend: str) -> str:
    return f"Maestro ({backend})"


class BenchError(RuntimeError):
    """The system under test did not do what the bench asked (a run failed, say)."""


@dataclass
class MaestroRun:
    """One workload run through the stack, seen from the client."""

    seconds: float
    """CreateRun call -> terminal event received."""
    server_seconds: float
    """RUN_CREATED event time -> terminal event time (the store's clock)."""
    create_seconds: float
    cpu: dict[str, float]
    """CPU seconds of each service (and the bench client) during the run."""
    timeline: Timeline
    """Where its time went, step by step (bench/timeline.py)."""


class MaestroContender:
    """Runs workloads as `bench` provider runs through one stack's gateway."""

    def __init__(self, backend: str, stack: TimedStack, stub: Stub, timeout: float) -> None:
        self.backend = backend
        self.stack = stack
        self.stub = stub
        self._pids = stack.pids()
        self._timeout = timeout
        self.runs: dict[str, list[MaestroRun]] = {}

    async def run(self, workload: Workload) -> float:
        """Runs the workload once; returns the client's wall time.

        Raises:
            BenchError: the run did not succeed.
        """
        stub = self.stub
        request = bench_request(workload.workflow_yaml())
        before = cpu_snapshot(self._pids)
        began = time.perf_counter()
        run = await create_run(stub, request)
        created = time.perf_counter()
        received = await follow(stub, run.name, timeout=self._timeout)
        cpu = cpu_delta(before, cpu_snapshot(self._pids))
        last = received[-1]
        if last.event.type != gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED:
            raise BenchError(f"{workload.key}: {await run_error(stub, run.name)}")
        stamps = [
            Stamp(type_name(r.event.type), r.event.step_id, event_wall_time(r.event))
            for r in received
        ]
        sample = MaestroRun(
            seconds=last.mono - began,
            server_seconds=event_wall_time(last.event) - event_wall_time(received[0].event),
            create_seconds=created - began,
            cpu=cpu,
            timeline=timeline(workload, stamps),
        )
        self.runs.setdefault(workload.key, []).append(sample)
        return sample.seconds


Contender = Callable[[Workload], Awaitable[float]]


@dataclass
class RoundResults:
    """Seconds per (workload key, contender name), one per round, in round order."""

    workloads: tuple[Workload, ...]
    contenders: tuple[str, ...]
    seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    maestro: dict[str, MaestroContender] = field(default_factory=dict)
    """The Maestro contenders by name, with their per-run details."""
    missing: dict[str, str] = field(default_factory=dict)
    """Contenders that could not run at all, with the reason (e.g. not installed)."""

    def samples(self, workload: Workload, contender: str) -> list[float]:
        return self.seconds.get((workload.key, contender), [])


async def run_rounds(
    workloads: Sequence[Workload],
    contenders: Mapping[str, Contender],
    rounds: int,
    *,
    note: Callable[[str], None],
) -> dict[tuple[str, str], list[float]]:
    """Runs every workload with every contender, `rounds` times, interleaved."""
    names = list(contenders)
    seconds: dict[tuple[str, str], list[float]] = {}
    for index in range(rounds):
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        for workload in workloads:
            for name in order:
                freeze_bench_heap()
                elapsed = await contenders[name](workload)
                seconds.setdefault((workload.key, name), []).append(elapsed)
        summary = ", ".join(
            f"{w.key} {seconds[(w.key, names[0])][-1]:.2f}s" for w in workloads if names
        )
        note(f"round {index + 1}/{rounds} done ({names[0]}: {summary})")
    return seconds


def cpu_per_step(contender: MaestroContender, workload: Workload) -> dict[str, float]:
    """Mean CPU ms per step of each service over the workload's runs."""
    runs = contender.runs.get(workload.key, [])
    if not runs:
        return {}
    return {
        name: sum(run.cpu[name] for run in runs) / len(runs) / workload.size * 1000
        for name in (*SERVICES, BENCH_CLIENT)
    }

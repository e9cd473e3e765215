"""What one worker call costs, layer by layer, beside grpc.aio's own cost.

    python -m bench.bench_call_cost [--calls 2000] [--rounds 3]

Every no-op step of `python -m bench` is one RunStep call from the scheduler to the
worker. This bench takes that call apart. Each server below runs in its own process
(`bench.call_cost_server`), and this process calls it:

1. the gRPC floor's call: a bare grpc.aio unary call, 64 bytes back;
2. RunStep's shape on the same bare server: a server-streaming call answered with a
   prebuilt result;
3. the same behind Maestro's metrics and serving interceptors, with a bearer token;
4. the worker's servicer and runner with the bench provider, without interceptors;
5. the worker as `persona_service` serves it (interceptors, servicer, metered runner);
6. one message each way on a bidirectional stream that stays open: what a step would
   cost if dispatches went over one long stream instead of a call each.

Each case is measured with one call at a time, then with 100 at a time. The cases
alternate within each round. Reported per call: wall time, the server's CPU (from
/proc) and this process's CPU. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.call_cost_server import ECHO_METHOD, LAYERS, TOKEN, WORKER_SERVICE
from bench.floor_worker import METHOD as FLOOR_METHOD
from bench.floors import server_process
from bench.procs import read_cpu_seconds
from maestro.api.worker.v1 import worker_pb2
from scheduler.convert import attempt_request_to_proto
from scheduler.models import AttemptRequest

CALL_TIMEOUT_SECONDS = 30.0
CONCURRENCY = 100
RUN_STEP = f"/{WORKER_SERVICE}/RunStep"
AUTH = (("authorization", f"Bearer {TOKEN}"),)

Call = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    label: str
    layers: str
    """Which `bench.call_cost_server` serves it."""
    kind: str
    """floor, run_step or stream."""


CASES = (
    Case("gRPC floor call (unary, 64 B answer)", "bare", "floor"),
    Case("RunStep's shape (server stream), bare server", "bare", "run_step"),
    Case("+ metrics and serving interceptors (token checked)", "interceptors", "run_step"),
    Case("worker servicer and runner, no interceptors", "servicer", "run_step"),
    Case("worker as served (interceptors, servicer, metered runner)", "worker", "run_step"),
    Case("one message each way on an open bidirectional stream", "bare", "stream"),
)


@dataclass
class Measured:
    """Per call, one entry per round."""

    wall_ms: list[float] = field(default_factory=list)
    server_cpu_ms: list[float] = field(default_factory=list)
    client_cpu_ms: list[float] = field(default_factory=list)


def run_step_request() -> bytes:
    """A no-op step for the bench provider, as the scheduler sends it."""
    attempt = AttemptRequest(
        run_id="bench",
        step_id="s",
        attempt=1,
        persona="backend_developer",
        requirement="benchmark",
        instructions="",
        dependencies=(),
        provider="bench",
    )
    return attempt_request_to_proto(attempt).SerializeToString()


async def _caller(channel: grpc.aio.Channel, case: Case, exits: AsyncExitStack) -> Call:
    """One call (or one message round trip) of `case`, raw bytes both ways."""
    if case.kind == "floor":
        floor = channel.unary_unary(FLOOR_METHOD, None, None)

        async def one_floor() -> None:
            await floor(b"0", timeout=CALL_TIMEOUT_SECONDS)

        return one_floor
    if case.kind == "run_step":
        run_step = channel.unary_stream(RUN_STEP, None, None)
        request = run_step_request()
        metadata = AUTH if case.layers in ("interceptors", "worker") else None

        async def one_run_step() -> None:
            call = run_step(request, timeout=CALL_TIMEOUT_SECONDS, metadata=metadata)
            raw = await call.read()
            if not isinstance(raw, bytes):
                raise RuntimeError(f"{case.label}: the stream ended without an answer")
            answer = worker_pb2.ExecuteStepResponse.FromString(raw)
            if answer.WhichOneof("kind") != "result":
                raise RuntimeError(f"{case.label}: no result but {answer}")

        return one_run_step
    # The stream's deadline covers the whole bench: it stays open across calls.
    stream = channel.stream_stream(ECHO_METHOD, None, None)(None, timeout=3600.0)
    exits.callback(stream.cancel)

    async def one_message() -> None:
        await stream.write(b"0")
        await stream.read()

    return one_message


async def _measure(call: Call, calls: int, concurrency: int, server_pid: int) -> tuple[float, ...]:
    """(wall ms, server CPU ms, client CPU ms) per call over about `calls` calls (a
    multiple of `concurrency`)."""
    each = calls // concurrency
    server_before, client_before = read_cpu_seconds(server_pid), time.process_time()
    began = time.perf_counter()

    # A stream carries one message at a time: only calls run concurrently.
    async def some() -> None:
        for _ in range(each):
            await call()

    await asyncio.gather(*(some() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    server = read_cpu_seconds(server_pid) - server_before
    client = time.process_time() - client_before
    return tuple(1000 * value / (each * concurrency) for value in (wall, server, client))


async def bench(calls: int, rounds: int) -> dict[tuple[str, int], Measured]:
    results: dict[tuple[str, int], Measured] = {}
    with tempfile.TemporaryDirectory(prefix="maestro-call-cost-") as tmp:
        async with AsyncExitStack() as exits:
            servers: dict[str, tuple[int, grpc.aio.Channel]] = {}
            for layers in LAYERS:
                process, port = await exits.enter_async_context(
                    server_process("bench.call_cost_server", (layers,), Path(tmp) / layers)
                )
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
                exits.push_async_callback(channel.close, None)
                servers[layers] = (process.pid, channel)
            callers = {}
            for case in CASES:
                pid, channel = servers[case.layers]
                callers[case.label] = (await _caller(channel, case, exits), pid)
            for call, _ in callers.values():
                for _ in range(200):  # warm: connections, caches, the first imports
                    await call()
            for round_index in range(rounds):
                # The order rotates, so no case always runs first or last.
                order = CASES[round_index % len(CASES) :] + CASES[: round_index % len(CASES)]
                for case in order:
                    call, pid = callers[case.label]
                    modes = (1,) if case.kind == "stream" else (1, CONCURRENCY)
                    for concurrency in modes:
                        wall, server, client = await _measure(call, calls, concurrency, pid)
                        found = results.setdefault((case.label, concurrency), Measured())
                        found.wall_ms.append(wall)
                        found.server_cpu_ms.append(server)
                        found.client_cpu_ms.append(client)
                print(f"round {round_index + 1} of {rounds} done", file=sys.stderr, flush=True)
    return results


def table(results: dict[tuple[str, int], Measured]) -> str:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"

    lines = [
        "| call | at once | wall ms/call | server CPU ms/call | client CPU ms/call |",
        "|---|---:|---:|---:|---:|",
    ]
    for case in CASES:
        for concurrency in (1, CONCURRENCY):
            found = results.get((case.label, concurrency))
            if found is None:
                continue
            lines.append(
                f"| {case.label} | {concurrency} | {cell(found.wall_ms)} | "
                f"{cell(found.server_cpu_ms)} | {cell(found.client_cpu_ms)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--calls", type=int, default=2000, help="calls per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    args: Any = parser.parse_args(argv)
    if args.calls < CONCURRENCY or args.rounds < 1:
        parser.error(f"--calls must be at least {CONCURRENCY} and --rounds at least 1")
    print(table(asyncio.run(bench(args.calls, args.rounds))))
    print(
        "\nMedian over the rounds (min–max). CPU from /proc (10 ms ticks) over all the "
        "round's calls of the case, divided by the calls; the client is this process."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

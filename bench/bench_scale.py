"""Several schedulers on one PostgreSQL store: run with `python -m bench.bench_scale`.

1. Throughput with 1, 2 and 4 schedulers: RUNS concurrent runs of no-op `bench` steps
   (each run a W1-shaped DAG, smaller), every service its own process on this machine;
   steps per second from the first CreateRun to the last terminal event, and the CPU
   each scheduler used. The runs are spread over the schedulers by their claims.
2. Takeover after `kill -9`: two schedulers, one run of a chain of sleeping steps; the
   scheduler that owns the run is killed mid-step; how long until the other one writes
   the run's next event (the lease running out plus its claim interval), and whether
   the run still succeeds.

Prints markdown tables for bench/RESULTS.md; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg

from bench import procs
from bench.client import bench_request, create_run, follow, observe_run, type_name
from bench.stacks import POSTGRESQL, Backend, database, open_stack
from bench.workloads import Workload, layered
from maestro.api.gateway.v1 import gateway_pb2
from maestro.cli.stack import scheduler_name

RUNS = 8
TIMEOUT = 600.0


def _workload(layers: int, width: int) -> Workload:
    return Workload(
        key="scale",
        description=f"{layers} layers x {width} no-op steps",
        steps=tuple(layered(layers, width, 0, full=False)),
        per_step=True,
    )


async def throughput(server_url: str, schedulers: int, workload: Workload) -> dict[str, float]:
    """Steps per second of RUNS concurrent runs on `schedulers` schedulers."""
    backend = Backend(POSTGRESQL, server_url)
    with TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / ".maestro"
        async with database(backend, f"scale{schedulers}", Path(tmp)) as url:
            env = {"MAESTRO_SCHEDULER_MAX_STEPS_IN_FLIGHT": "100"}
            async with open_stack(data_dir, url, extra_env=env, schedulers=schedulers) as (
                stack,
                stub,
            ):
                names = [scheduler_name(i) for i in range(schedulers)]
                pids = {name: stack.pid(name) or 0 for name in names}
                cpu_before = {name: procs.read_cpu_seconds(pid) for name, pid in pids.items()}
                request = bench_request(workload.workflow_yaml())
                began = time.perf_counter()
                observed = await asyncio.gather(
                    *(observe_run(stub, timeout=TIMEOUT, request=request) for _ in range(RUNS))
                )
                wall = time.perf_counter() - began
                cpu = sum(procs.read_cpu_seconds(pid) - cpu_before[n] for n, pid in pids.items())
    failed = [o.outcome for o in observed if not o.succeeded]
    if failed:
        raise RuntimeError(f"{len(failed)} of {RUNS} runs did not succeed: {failed[:3]}")
    steps = RUNS * workload.size
    return {"wall": wall, "steps_per_second": steps / wall, "scheduler_cpu_ms": cpu * 1000 / steps}


async def _owner(url: str, run_id: str) -> str:
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=10) as conn:
        cursor = await conn.execute(b"SELECT owner FROM runs WHERE run_id = %s", (run_id,))
        row = await cursor.fetchone()
    return str(row[0]) if row and row[0] else ""


async def takeover(server_url: str) -> dict[str, float | str]:
    """Kills the owning scheduler of a running run; times the other one taking it over."""
    backend = Backend(POSTGRESQL, server_url)
    chain = "\n".join(
        f"  - {{id: s{i}, persona: backend_developer, instructions: sleep 3s"
        + (f", depends_on: [s{i - 1}]}}" if i else "}")
        for i in range(4)
    )
    request = bench_request(f"name: takeover\nsteps:\n{chain}\n")
    with TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / ".maestro"
        async with (
            database(backend, "takeover", Path(tmp)) as url,
            open_stack(data_dir, url, schedulers=2) as (stack, stub),
        ):
            run = await create_run(stub, request)
            run_id = run.name.removeprefix("runs/")
            events = asyncio.create_task(follow(stub, run.name, timeout=TIMEOUT))
            owner = ""
            while not owner or run.state != gateway_pb2.RUN_STATE_RUNNING:
                await asyncio.sleep(0.2)
                owner = await _owner(url, run_id)
                run = await stub.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=10)
            await asyncio.sleep(1.0)  # mid-step
            owner_pid = int(owner.split(":")[1])
            victim = next(n for n in stack.scheduler_names if stack.pid(n) == owner_pid)
            killed_at = time.time()
            await stack.kill_service(victim)
            received = await events
    after = [r for r in received if r.wall >= killed_at]
    first = after[0] if after else None
    return {
        "first_event_seconds": (first.wall - killed_at) if first else float("nan"),
        "first_event": type_name(first.event.type) if first else "none",
        "outcome": type_name(received[-1].event.type),
        "end_seconds": received[-1].wall - killed_at,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--width", type=int, default=40)
    parser.add_argument("--takeover-only", action="store_true", help="skip the throughput table")
    args = parser.parse_args()
    workload = _workload(args.layers, args.width)
    print(f"load average before: {procs.load_average()}")
    print("\n| schedulers | runs x steps | wall s | steps/s | scheduler CPU ms/step |")
    print("|---:|---|---:|---:|---:|")
    for count in () if args.takeover_only else (1, 2, 4):
        result = asyncio.run(throughput(args.postgres_url, count, workload))
        print(
            f"| {count} | {RUNS} x {workload.size} | {result['wall']:.2f} | "
            f"{result['steps_per_second']:.0f} | {result['scheduler_cpu_ms']:.2f} |"
        )
    taken = asyncio.run(takeover(args.postgres_url))
    print(
        "\n| takeover after kill -9 of the owning scheduler | value |\n|---|---|\n"
        f"| first event by the survivor | {taken['first_event']} after "
        f"{taken['first_event_seconds']:.1f} s |\n"
        f"| the run | {taken['outcome']}, {taken['end_seconds']:.1f} s after the kill |"
    )
    print(f"\nload average after: {procs.load_average()}")


if __name__ == "__main__":
    main()

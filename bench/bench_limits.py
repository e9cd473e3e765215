"""What the request limits cost and save: run with `python -m bench.bench_limits`.

1. The worst workflow validation the limits allow (pure CPU, best of 5), for the
   documents that did the most work once the caps were in place.
2. The gateway's memory before and after a burst of oversized requests (refused by
   gRPC at 1 MiB) and of requests just under the limit (refused by validation).
3. How long the scheduler's health takes to answer while 24 worst-case workflows are
   being validated at once.

Prints a small table; nothing is asserted (timing claims live here, not in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.procs import read_memory
from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.credentials import read_local_token
from maestro.cli.stack import GATEWAY, SCHEDULER, LocalStack
from maestro.core.client import insecure_channel
from maestro.workflow import WorkflowError, parse_workflow_yaml
from maestro.workflow.limits import MAX_DEPENDENCIES, MAX_YAML_NODES

# As many steps with MAX_DEPENDENCIES long unknown names each as fit in the byte limit.
WORST_STEPS = 100


def _ids(rnd: random.Random, count: int, length: int) -> list[str]:
    return ["s" + "".join(rnd.choices(string.ascii_lowercase, k=length)) for _ in range(count)]


def worst_cases() -> dict[str, str]:
    rnd = random.Random(2)
    unknown = "".join(
        f"  - {{id: {step}, persona: qa_engineer, depends_on: [{', '.join(deps)}]}}\n"
        for step, deps in zip(
            _ids(rnd, WORST_STEPS, 30),
            (_ids(rnd, MAX_DEPENDENCIES, 30) for _ in range(WORST_STEPS)),
            strict=True,
        )
    )
    ids = [f"s{i}" for i in range(WORST_STEPS)]
    cyclic = "".join(
        f"  - {{id: {ids[i]}, persona: qa_engineer, depends_on: "
        f"[{', '.join(ids[(i + k) % WORST_STEPS] for k in range(1, MAX_DEPENDENCIES + 1))}]}}\n"
        for i in range(WORST_STEPS)
    )
    fields = ", ".join(f"{name}: 1" for name in _ids(rnd, MAX_YAML_NODES // 2 - 10, 6))
    return {
        "100 steps x 32 unknown dependencies": f"name: w\nsteps:\n{unknown}",
        "100 steps x 32 dependencies, all cyclic": f"name: w\nsteps:\n{cyclic}",
        "4,990 unknown fields": f"name: w\nsteps:\n  - {{id: a, persona: qa_engineer, {fields}}}\n",
        "9,990-item steps list": "name: w\nsteps: [" + ",".join(["a"] * 9990) + "]\n",
    }


def validation_times() -> list[tuple[str, int, float]]:
    rows = []
    for name, text in worst_cases().items():
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            with contextlib.suppress(WorkflowError):  # the worst ones are all invalid
                parse_workflow_yaml(text)
            best = min(best, time.perf_counter() - started)
        rows.append((name, len(text.encode()), best * 1000))
    return rows


async def gateway_memory_and_health() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with LocalStack(Path(tmp) / ".maestro", provider="offline") as stack:
            # The stack's process table is private; a bench may read it.
            pid = stack._running[GATEWAY].process.pid
            channel = insecure_channel(
                stack.gateway_address, token=read_local_token(stack.data_dir)
            )
            stub = gateway_pb2_grpc.MaestroServiceStub(channel)
            before = read_memory(pid)
            codes: dict[str, int] = {}

            async def send(size: int) -> None:
                request = gateway_pb2.CreateRunRequest(
                    workflow_name="sdlc-linear", requirement="x" * size
                )
                try:
                    await stub.CreateRun(request, timeout=30)
                    code = "OK"
                except grpc.aio.AioRpcError as err:
                    code = err.code().name
                codes[code] = codes.get(code, 0) + 1

            for _ in range(4):  # 4 x 60 MB, as in the attack
                await send(60 * 1024 * 1024)
            for _ in range(20):
                await asyncio.gather(*(send(1000 * 1024) for _ in range(5)))
            after = read_memory(pid)

            worst = worst_cases()["100 steps x 32 unknown dependencies"]
            creating = asyncio.gather(
                *(
                    stub.CreateRun(
                        gateway_pb2.CreateRunRequest(workflow_yaml=worst, requirement="x"),
                        timeout=60,
                    )
                    for _ in range(24)
                ),
                return_exceptions=True,
            )
            health_channel = grpc.aio.insecure_channel(stack.address(SCHEDULER))
            health = health_pb2_grpc.HealthStub(health_channel)
            waits = []
            while not creating.done():
                started = time.perf_counter()
                await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                waits.append(time.perf_counter() - started)
            await creating
            await health_channel.close(None)
            await channel.close(None)
    return {"before": before, "after": after, "codes": codes, "health": waits}


def main() -> None:
    print("| worst workflow | bytes | validation (ms, best of 5) |")
    print("|---|---:|---:|")
    for name, size, ms in validation_times():
        print(f"| {name} | {size:,} | {ms:.1f} |")
    result = asyncio.run(gateway_memory_and_health())
    print()
    print(
        f"gateway RSS: {result['before'].rss_kib / 1024:.1f} MiB before; after 4 x 60 MB and "
        f"100 x 1000 KiB CreateRun requests ({result['codes']}): RSS "
        f"{result['after'].rss_kib / 1024:.1f} MiB, peak {result['after'].hwm_kib / 1024:.1f} MiB"
    )
    waits = sorted(result["health"])
    print(
        f"scheduler health while 24 worst workflows validate: {len(waits)} checks, "
        f"median {waits[len(waits) // 2] * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()

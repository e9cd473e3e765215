"""The servers `bench.bench_call_cost` calls: `python -m bench.call_cost_server LAYERS PORT_FILE`.

One grpc.aio server per process, so the bench reads each one's CPU from /proc. LAYERS
names what stands between gRPC and the answer, from nothing to the worker as served:

- `bare`: the gRPC floor's own `/bench.Floor/Step` (`bench.floor_worker`), `RunStep`
  answered with a prebuilt result, and a bidirectional `/bench.Stream/Echo` that
  answers each message it gets (a step sent on a stream that stays open);
- `interceptors`: the same handlers behind Maestro's metrics and serving interceptors
  (a bearer token checked on every call);
- `servicer`: the worker's servicer and runner with the bench provider, no interceptor;
- `worker`: the worker as `persona_service` serves it: interceptors, servicer, metered
  runner.

Tracing stays off, as in the bench's stacks. Exits on SIGTERM, and when the bench that
started it dies (MAESTRO_PARENT_PID).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from bench.floor_worker import ANSWER as FLOOR_ANSWER
from bench.floor_worker import floor_handler, serve_until_terminated
from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.core.auth import BearerAuthenticator, Identity, TokenTable, hash_token
from maestro.core.interceptor import ServingInterceptor
from maestro.core.lifecycle import exit_with_parent
from maestro.core.metrics import MetricsInterceptor
from persona_service.bench_provider import BenchProvider
from persona_service.observe import MeteredStepRunner
from persona_service.runner import StepRunner
from persona_service.servicer import WorkerServicer

LAYERS = ("bare", "interceptors", "servicer", "worker")
TOKEN = "mst_bench-call-cost"
"""The token the bench presents (the servers with interceptors check it)."""
ECHO_METHOD = "/bench.Stream/Echo"
WORKER_SERVICE = "maestro.api.worker.v1.WorkerService"

_RUN_STEP_ANSWER = worker_pb2.ExecuteStepResponse(
    result=worker_pb2.StepResult(
        summary="bench",
        files=[worker_pb2.File(path="bench/s.txt", content=b"x" * 64)],
        provider="bench",
        model="bench",
    )
).SerializeToString()


async def _run_step(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield _RUN_STEP_ANSWER


async def _echo(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield FLOOR_ANSWER


def _bare_handlers() -> list[grpc.GenericRpcHandler]:  # type: ignore[type-arg]
    echo = grpc.method_handlers_generic_handler(
        "bench.Stream", {"Echo": grpc.stream_stream_rpc_method_handler(_echo)}
    )
    run_step = grpc.method_handlers_generic_handler(
        WORKER_SERVICE, {"RunStep": grpc.unary_stream_rpc_method_handler(_run_step)}
    )
    return [floor_handler(), echo, run_step]


def _interceptors() -> list[Any]:
    table = TokenTable([(hash_token(TOKEN), Identity("scheduler"))])
    return [MetricsInterceptor(), ServingInterceptor(BearerAuthenticator(table, realm="bench"))]


def build_server(layers: str) -> grpc.aio.Server:
    """A server with `layers` (one of LAYERS) in front of its answers; not started."""
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {', '.join(LAYERS)}, not {layers!r}")
    intercepted = layers in ("interceptors", "worker")
    server = grpc.aio.server(interceptors=_interceptors() if intercepted else None)
    if layers in ("bare", "interceptors"):
        server.add_generic_rpc_handlers(_bare_handlers())
        return server
    runner_type = MeteredStepRunner if layers == "worker" else StepRunner
    runner = runner_type(
        {"bench": BenchProvider()}, default_provider="bench", heartbeat_interval=30.0
    )
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(runner, 600.0), server)
    return server


async def serve(layers: str, port_file: Path) -> None:
    # The server is made inside the event loop that serves it (grpc.aio binds to it).
    await serve_until_terminated(build_server(layers), port_file)


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in LAYERS:
        choices = "|".join(LAYERS)
        raise SystemExit(f"usage: python -m bench.call_cost_server {{{choices}}} PORT_FILE")
    exit_with_parent()
    asyncio.run(serve(sys.argv[1], Path(sys.argv[2])))


if __name__ == "__main__":
    main()

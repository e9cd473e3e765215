"""The gRPC floor's worker: `python -m bench.floor_worker PORT_FILE`.

A bare grpc.aio server with one unary method, `/bench.Floor/Step`: the request is
the step's sleep in milliseconds (ASCII), the answer a small payload (the size of
the bench provider's file). It is what one worker call costs with nothing of
Maestro around it: no interceptors, no store, no events. Exits on SIGTERM, and
when the bench that started it dies (MAESTRO_PARENT_PID).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc

from maestro.core.lifecycle import exit_with_parent

METHOD = "/bench.Floor/Step"
ANSWER = b"x" * 64


async def _step(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    sleep_ms = int(request.decode("ascii") or "0")
    if sleep_ms:
        await asyncio.sleep(sleep_ms / 1000)
    return ANSWER


def _write_port(port_file: Path, port: int) -> None:
    temporary = port_file.with_suffix(".tmp")
    temporary.write_text(str(port), encoding="ascii")
    os.replace(temporary, port_file)  # atomic: the bench never reads half a number


def floor_handler() -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
    """`/bench.Floor/Step`: the floor's one method."""
    return grpc.method_handlers_generic_handler(
        "bench.Floor", {"Step": grpc.unary_unary_rpc_method_handler(_step)}
    )


async def serve_until_terminated(server: grpc.aio.Server, port_file: Path) -> None:
    """Serves on a free loopback port, written to `port_file`, until SIGTERM."""
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await asyncio.to_thread(_write_port, port_file, port)
    await stopping.wait()
    await server.stop(1.0)


async def serve(port_file: Path) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((floor_handler(),))
    await serve_until_terminated(server, port_file)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.floor_worker PORT_FILE")
    exit_with_parent()
    asyncio.run(serve(Path(sys.argv[1])))


if __name__ == "__main__":
    main()

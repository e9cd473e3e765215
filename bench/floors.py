"""The floors Maestro is compared with, walked in the bench's own process.

- asyncio floor: the workload's DAG walked with asyncio tasks (dependency counters,
  at most `in_flight` at once); a step is its sleep, or nothing. No I/O at all.
- gRPC floor: the same walk, each step one grpc.aio unary call (with a deadline) to
  a worker process (`bench.floor_worker`) that does the step's sleep.
- LangGraph (optional, `pip install -e '.[bench]'`): the same DAG as a StateGraph,
  `max_concurrency` = the cap. Absent, its column says so.
"""

from __future__ import annotations

import asyncio
import operator
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, TypedDict

import grpc

from bench.floor_worker import METHOD
from bench.workloads import Step, Workload
from maestro.core.lifecycle import PARENT_PID_ENV

REPO = Path(__file__).resolve().parent.parent
CALL_TIMEOUT_SECONDS = 30.0
START_TIMEOUT_SECONDS = 20.0

StepBody = Callable[[Step], Coroutine[Any, Any, None]]


async def walk(workload: Workload, body: StepBody) -> None:
    """Runs `body` for every step once its dependencies finished, `in_flight` at most."""
    by_id = {step.id: step for step in workload.steps}
    waiting = {step.id: len(step.depends_on) for step in workload.steps}
    dependents: dict[str, list[str]] = {step.id: [] for step in workload.steps}
    for step in workload.steps:
        for dep in step.depends_on:
            dependents[dep].append(step.id)
    ready = deque(step for step in workload.steps if not step.depends_on)
    running: dict[asyncio.Task[None], Step] = {}
    try:
        while ready or running:
            while ready and len(running) < workload.in_flight:
                step = ready.popleft()
                running[asyncio.create_task(body(step))] = step
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                finished = running.pop(task)
                task.result()  # a failed step fails the walk
                for name in dependents[finished.id]:
                    waiting[name] -= 1
                    if waiting[name] == 0:
                        ready.append(by_id[name])
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _sleep_body(step: Step) -> None:
    if step.sleep_ms:
        await asyncio.sleep(step.sleep_ms / 1000)


async def asyncio_floor(workload: Workload) -> float:
    """Seconds to walk the workload with asyncio tasks alone."""
    began = time.perf_counter()
    await walk(workload, _sleep_body)
    return time.perf_counter() - began


class FloorWorker:
    """The gRPC floor's worker process and a channel to it."""

    def __init__(self, process: asyncio.subprocess.Process, channel: grpc.aio.Channel) -> None:
        self.process = process
        self._call = channel.unary_unary(
            METHOD, request_serializer=None, response_deserializer=None
        )

    async def step(self, step: Step) -> None:
        """One round trip: the worker sleeps the step's time and answers."""
        await self._call(str(step.sleep_ms).encode("ascii"), timeout=CALL_TIMEOUT_SECONDS)

    async def run(self, workload: Workload) -> float:
        """Seconds to walk the workload with one worker call per step."""
        began = time.perf_counter()
        await walk(workload, self.step)
        return time.perf_counter() - began


async def _wait_for_port(process: asyncio.subprocess.Process, port_file: Path, module: str) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_SECONDS
    while loop.time() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"{module} exited with code {process.returncode}")
        with suppress(FileNotFoundError, ValueError):
            return int(await asyncio.to_thread(port_file.read_text, encoding="ascii"))
        # Polls a file the child writes once; there is no event to wait on across exec.
        await asyncio.sleep(0.02)
    raise RuntimeError(f"{module} wrote no port file in {START_TIMEOUT_SECONDS:g}s")


@asynccontextmanager
async def server_process(
    module: str, args: Sequence[str], port_file: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """Runs `python -m MODULE *ARGS PORT_FILE` (a bench server that writes its port to
    PORT_FILE once it serves); yields the process and the port; stops it afterwards."""
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, str(port_file), env=env, cwd=REPO
    )
    try:
        yield process, await _wait_for_port(process, port_file, module)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10.0)
            except TimeoutError:
                process.kill()
                await process.wait()


@asynccontextmanager
async def floor_worker(workdir: Path) -> AsyncIterator[FloorWorker]:
    """Starts `python -m bench.floor_worker` and yields a client; stops it afterwards."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    port_file = workdir / "floor_worker.port"
    async with server_process("bench.floor_worker", (), port_file) as (process, port):
        # A bare channel like the bare server: Maestro's keepalive pings would earn a
        # GOAWAY (too_many_pings) from a server with gRPC's default ping policy.
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT_SECONDS)
            yield FloorWorker(process, channel)
        finally:
            await channel.close(None)


# -- LangGraph (optional) ---------------------------------------------------------------


def langgraph_missing() -> str:
    """Why LangGraph cannot run here, or '' when it can."""
    try:
        import langgraph.graph  # noqa: F401
    except ImportError:
        return "not installed (pip install -e '.[bench]')"
    return ""


class GraphState(TypedDict):
    """LangGraph's state: how many steps ran (each node adds one)."""

    steps: Annotated[int, operator.add]


def _node(sleep_ms: int) -> Callable[[dict[str, Any]], Awaitable[dict[str, int]]]:
    async def node(state: dict[str, Any]) -> dict[str, int]:
        if sleep_ms:
            await asyncio.sleep(sleep_ms / 1000)
        return {"steps": 1}

    return node


class LangGraphRunner:
    """Compiles each workload's graph once; `run` times one invocation."""

    def __init__(self) -> None:
        self._compiled: dict[str, Any] = {}

    def _compile(self, workload: Workload) -> Any:
        from langgraph.graph import END, START, StateGraph

        graph: Any = StateGraph(GraphState)
        has_dependents: set[str] = set()
        for step in workload.steps:
            graph.add_node(step.id, _node(step.sleep_ms))
            if not step.depends_on:
                graph.add_edge(START, step.id)
            elif len(step.depends_on) == 1:
                graph.add_edge(step.depends_on[0], step.id)
            else:
                graph.add_edge(list(step.depends_on), step.id)  # waits for all of them
            has_dependents.update(step.depends_on)
        for step in workload.steps:
            if step.id not in has_dependents:
                graph.add_edge(step.id, END)
        return graph.compile()

    async def run(self, workload: Workload) -> float:
        """Seconds for one invocation (compiling is done once, outside the timing)."""
        key = f"{workload.key}/{workload.size}"
        if key not in self._compiled:
            self._compiled[key] = await asyncio.to_thread(self._compile, workload)
        graph = self._compiled[key]
        config = {"recursion_limit": workload.size + 10, "max_concurrency": workload.in_flight}
        began = time.perf_counter()
        state = await graph.ainvoke({"steps": 0}, config=config)
        elapsed = time.perf_counter() - began
        if state["steps"] != workload.size:
            raise RuntimeError(f"LangGraph ran {state['steps']} of {workload.size} steps")
        return elapsed

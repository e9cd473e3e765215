"""Model capacity: how close to a rate limit the installation runs, and what admission
costs when there is room. Run with `python -m bench.bench_capacity`.

1. Achieved rate: 100 runs at once of a five-step document workflow (one model call per
   step: 500 calls), then of a one-step agent loop (two calls, the second admitted
   when the worker asks: 200 calls), through the whole stack (every service its own
   process, SQLite), against the fake Anthropic API, with a limit of RPM calls per
   scaled "minute". The fake records every arrival; the rate is counted in consecutive
   whole windows from the first arrival (the last, partial one left out), and as slot
   reuse: the mean time between a call and the one RPM calls later, which the limit
   keeps at least a window (window / that mean = the share of the limit used). The
   most in any sliding window is given too (it must not pass the limit).
2. Added dispatch latency when there is room: the limiter's admission of one call (the
   settlement, when the call ends, is off the dispatch path), in-process (SQLite: one
   scheduler) and from a PostgreSQL lease (several schedulers), 3,900 calls each (most
   of a Tier 4 minute's 4,000 requests); how many PostgreSQL round trips that took.

Prints a table; nothing is asserted (timing claims live here, not in tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.stats import percentile
from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.cli.credentials import read_local_token
from maestro.cli.stack import LocalStack
from maestro.core.client import insecure_channel
from maestro.store import open_store
from maestro.store.migrate import upgrade
from scheduler.breaker import BreakerPolicy
from scheduler.capacity import Demand, Limits
from scheduler.ledger import Ledger, LocalLedger
from scheduler.limiter import CallOutcome, CapacityLimiter
from scheduler.shared_ledger import SharedLedger
from tests.fakes.anthropic_server import FakeAnthropic
from tests.support.databases import create_postgres, drop_postgres, postgres_url

DOCS = """
name: five-documents
model: claude-sonnet-5-5
steps:
  - {id: requirements, persona: requirements_analyst}
  - {id: architecture, persona: solution_architect, depends_on: [requirements]}
  - {id: security, persona: security_reviewer, depends_on: [architecture]}
  - {id: review, persona: code_reviewer, depends_on: [architecture]}
  - {id: docs, persona: technical_writer, depends_on: [security, review]}
"""
# One code step: an agent loop of two calls (the fake writes the deliverables, then
# submits); the worker asks the scheduler before the second.
LOOP = """
name: one-loop
model: claude-sonnet-5-5
steps:
  - {id: packaging, persona: devops_engineer}
"""
MODEL = "claude-sonnet-5-5"
SMALL_CALL = Demand(1, 100, 10)


async def achieved_rate(
    runs: int, rpm: int, window: float, workflow: str = DOCS
) -> dict[str, float]:
    with FakeAnthropic() as fake, tempfile.TemporaryDirectory() as tmp:
        env = {
            "ANTHROPIC_API_KEY": "bench-key",
            "MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake.base_url,
            "MAESTRO_SCHEDULER_MAX_STEPS_IN_FLIGHT": str(runs * 2),
            "MAESTRO_SCHEDULER_CAPACITY_MINUTE_SECONDS": str(window),
            "MAESTRO_SCHEDULER_MODEL_LIMITS": json.dumps({MODEL: {"rpm": rpm}}),
            "MAESTRO_LOG_LEVEL": "WARNING",
            # One event stream per run, all from this client.
            "MAESTRO_GATEWAY_MAX_STREAMS_PER_CLIENT": str(runs + 10),
        }
        async with LocalStack(Path(tmp) / ".maestro", provider="anthropic", extra_env=env) as stack:
            channel = insecure_channel(
                stack.gateway_address, token=read_local_token(stack.data_dir)
            )
            stub = gateway_pb2_grpc.MaestroServiceStub(channel)

            # The scheduler validates a few workflows at a time (RESOURCE_EXHAUSTED
            # beyond): the runs are created a few at once, then all run together.
            creating = asyncio.Semaphore(4)

            async def one() -> None:
                async with creating:
                    run = await stub.CreateRun(
                        gateway_pb2.CreateRunRequest(
                            workflow_yaml=workflow,
                            requirement="bench",
                            request_id=uuid.uuid4().hex,
                        ),
                        timeout=30,
                    )
                request = gateway_pb2.StreamRunEventsRequest(name=run.name)
                async for _ in stub.StreamRunEvents(request, timeout=600):
                    pass

            started = time.monotonic()
            await asyncio.gather(*(one() for _ in range(runs)))
            wall = time.monotonic() - started
            await channel.close(None)
        arrivals = fake.arrival_times()
        first = arrivals[0]
        whole = int((arrivals[-1] - first) // window)
        counts = [
            sum(1 for t in arrivals if first + k * window <= t < first + (k + 1) * window)
            for k in range(whole)
        ]
        # Slot reuse: a call and the one `rpm` calls after it can be no closer than a
        # window; how much further apart they are on average is what the limit loses
        # (whole windows alone hide a drift smaller than the spread of a wave).
        gaps = [arrivals[k + rpm] - arrivals[k] for k in range(len(arrivals) - rpm)]
        return {
            "calls": len(arrivals),
            "wall": wall,
            "windows": whole,
            "reuse": statistics.mean(gaps) if gaps else float("nan"),
            "per_window": statistics.mean(counts) if counts else float("nan"),
            "max_sliding": fake.max_in_window(window),
            "rate_429": fake.rate_limited,
        }


async def admission_latency(ledger: Ledger, samples: int) -> list[float]:
    # Tier 4's limits (the defaults) and small calls: room for every sample, while
    # the window fills up to `samples` grants (what admission has to count) and a
    # PostgreSQL lease holds 2% of the limit (80 requests).
    limiter = CapacityLimiter(ledger, {MODEL: Limits()}, BreakerPolicy())

    async def no_wait(reason: str) -> None:
        raise AssertionError(f"had to wait: {reason}")

    times = []
    for _ in range(samples):
        begin = time.perf_counter()
        ticket = await limiter.admit(
            model=MODEL,
            demand=SMALL_CALL,
            run_id="bench",
            run_order=0.0,
            deadline=time.time() + 60,
            on_wait=no_wait,
        )
        times.append(time.perf_counter() - begin)
        # Settling happens when the call ends, off the dispatch path: not timed.
        await limiter.settle(ticket, actual=SMALL_CALL, report=None, outcome=CallOutcome.SUCCEEDED)
    await limiter.close()
    return times


def _ms(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1000:.3f} ms, p99 {percentile(values, 99) * 1000:.3f} ms"
    )


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values) * 1000:.3f} ms"


async def main(runs: int, rpm: int, window: float, samples: int) -> None:
    for what, workflow in (("5 document calls", DOCS), ("an agent loop of 2 calls", LOOP)):
        print(f"# {runs} runs x {what}, limit {rpm} per {window:g} s window")
        rate = await achieved_rate(runs, rpm, window, workflow)
        print(
            f"achieved: {rate['per_window']:.1f} calls per whole window of {rpm} allowed "
            f"({rate['per_window'] / rpm:.1%} of the limit, {rate['windows']:.0f} whole "
            f"windows); most in any sliding window: {rate['max_sliding']:.0f}; 429s: "
            f"{rate['rate_429']:.0f}; {rate['calls']:.0f} calls in {rate['wall']:.1f} s"
        )
        print(
            f"slot reuse: a call and the one {rpm} calls later are {rate['reuse']:.2f} s "
            f"apart on average (at least {window:g} s): {window / rate['reuse']:.1%} of the "
            "limit"
        )
    local = await admission_latency(LocalLedger(60.0), samples)
    print(f"admission with room, in-process (SQLite): {_ms(local)}; mean {_mean(local)}")
    name = create_postgres()
    try:
        url = postgres_url(name)
        upgrade(url)
        store = await open_store(url, writer=True)
        try:
            shared = SharedLedger(
                store, window=60.0, lease_seconds=2.0, lease_fraction=0.02, skew=5.0
            )
            times = await admission_latency(shared, samples)
            print(
                f"admission with room, PostgreSQL lease: {_ms(times)}; mean {_mean(times)}; "
                f"{shared.round_trips} database round trips for {samples} calls"
            )
        finally:
            await store.close()
    finally:
        drop_postgres(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rpm", type=int, default=120)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=3900)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.rpm, args.window, args.samples))

"""W1 on PostgreSQL over a slower link: run with `python -m bench.bench_remote_db`.

The main bench reaches PostgreSQL over loopback, where a round trip costs about 0.1 ms;
a deployed scheduler's database is another machine. This runs W1 through two real
stacks, one on PostgreSQL reached directly and one reached through bench/delay_proxy.py
(a fixed delay each way), alternating round by round, and prints ms/step with each
link's measured round trip and the scheduler's CPU. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bench import procs
from bench.rounds import MaestroContender
from bench.stacks import POSTGRESQL, Backend, database, open_stack
from bench.workloads import w1
from maestro.cli.ports import free_port

TIMEOUT = 600.0


def via_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


def round_trip_ms(url: str, queries: int = 200) -> float:
    """The median time of `SELECT 1` on one connection: the link's round trip."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        times = []
        for _ in range(queries):
            began = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def start_proxy(url: str, one_way_us: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    upstream = urlsplit(url).port or 5432
    proxy = subprocess.Popen(
        [sys.executable, "-m", "bench.delay_proxy", str(port), str(upstream), str(one_way_us)]
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            round_trip_ms(via_port(url, port), queries=1)
            return proxy, port
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                proxy.kill()
                raise
            time.sleep(0.1)


async def compare(server_url: str, proxied_url: str, rounds: int) -> dict[str, list[float]]:
    """W1 on each link, alternating; ms/step and scheduler CPU ms/step per round."""
    workload = w1()
    found: dict[str, list[float]] = {}
    with TemporaryDirectory(prefix="maestro-bench-remote-") as tmp:
        contenders: dict[str, MaestroContender] = {}
        async with AsyncExitStack() as exits:
            for label, url in (("direct", server_url), ("proxied", proxied_url)):
                data_dir = Path(tmp) / label
                data_dir.mkdir()
                db_url = await exits.enter_async_context(
                    database(Backend(POSTGRESQL, url), f"remote_{label}", data_dir)
                )
                stack, stub = await exits.enter_async_context(open_stack(data_dir, db_url))
                contenders[label] = MaestroContender(POSTGRESQL, stack, stub, TIMEOUT)
                await contenders[label].run(workload)  # warm-up, not counted
            for _ in range(rounds):
                for label, contender in contenders.items():
                    seconds = await contender.run(workload)
                    cpu = contender.runs[workload.key][-1].cpu["scheduler"]
                    found.setdefault(label, []).append(seconds * 1000 / workload.size)
                    found.setdefault(f"{label} cpu", []).append(cpu * 1000 / workload.size)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--one-way-us", type=int, default=250, help="delay added each way")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    proxy, port = start_proxy(args.postgres_url, args.one_way_us)
    try:
        proxied_url = via_port(args.postgres_url, port)
        links = {
            "direct": round_trip_ms(args.postgres_url),
            "proxied": round_trip_ms(proxied_url),
        }
        print(f"load average before: {procs.load_average()}")
        found = asyncio.run(compare(args.postgres_url, proxied_url, args.rounds))
    finally:
        proxy.kill()
        proxy.wait()
    print(
        "\n| link | round trip (SELECT 1, p50) | W1 ms/step (median; rounds)"
        " | scheduler CPU ms/step |"
    )
    print("|---|---:|---|---:|")
    for label, rtt in links.items():
        steps = found[label]
        print(
            f"| {label} | {rtt:.2f} ms | {statistics.median(steps):.2f} "
            f"({', '.join(f'{value:.2f}' for value in steps)}) | "
            f"{statistics.median(found[f'{label} cpu']):.2f} |"
        )


if __name__ == "__main__":
    main()

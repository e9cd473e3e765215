"""Maestro's speed and memory, measured over real processes and real gRPC.

    python -m bench.bench_runs [--runs N] [--concurrency C[,C...]] [--out bench/RESULTS.md]

Starts LocalStacks (every service its own process, SQLite on disk, loopback only) in a
temporary directory and measures: stack start-up and stop, CreateRun latency,
end-to-end latency of offline `sdlc-parallel` runs, throughput at several
concurrencies, event delivery latency (the gateway tails the store by polling),
cancellation latency with the worker stuck in a (fake) Anthropic call, the CPU time
and memory of each service, and the size of the SQLite database. Prints the tables
and writes them as Markdown. Every count is bounded and the whole bench has a time
budget; it stops its stacks whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import procs
from bench.client import WORKFLOW, RunObservation
from bench.measure import (
    Config,
    measure_anthropic,
    measure_offline,
    measure_poll_comparison,
    measure_startups,
    note,
)
from bench.stats import Table, render_markdown, render_text
from bench.tables import (
    cancel_table,
    cpu_table,
    create_run_table,
    database_table,
    delivery_table,
    end_to_end_table,
    idle_streams_table,
    memory_table,
    poll_comparison_table,
    startup_table,
    throughput_table,
)

REPO = Path(__file__).resolve().parent.parent


def header_lines(
    config: Config, started: datetime, elapsed: float, load_before: str
) -> Iterator[str]:
    """The Markdown preamble: when, where, how, and how busy the machine was."""
    machine = procs.machine_info(REPO)
    command = shlex.join(["python", "-m", "bench.bench_runs", *sys.argv[1:]])
    yield "# Maestro benchmark results"
    yield ""
    yield f"- Date: {started:%Y-%m-%d %H:%M} UTC (the bench took {elapsed:.0f} s)"
    yield (
        f"- Machine: nproc {machine['nproc']}, {machine['cpu']}, {machine['memory']} RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}"
    )
    yield (
        f"- Load average (1, 5, 15 min) before: {load_before}; after: {procs.load_average()} "
        "(the bench itself adds to it; other work on the machine would show here)"
    )
    yield f"- Maestro commit: {machine['maestro commit']}"
    yield f"- Command: `{command}`"
    yield (
        f"- Settings: workflow `{WORKFLOW}` (6 steps; backend and frontend in parallel), "
        f"gateway event poll {config.poll_seconds:g} s unless stated (Maestro's default is "
        "0.05 s), "
        f"{config.runs} sequential runs, concurrency levels "
        f"{', '.join(map(str, config.concurrency))} with {config.throughput_runs} runs each."
    )
    yield (
        "- Every service is its own process on 127.0.0.1 (LocalStack), SQLite (WAL) on local "
        "disk; the bench client runs on the same cores. Percentiles are nearest-rank, so with "
        "few samples p95 is at or near the max."
    )


def write_report(path: Path, preamble: Sequence[str], tables: Sequence[Table]) -> None:
    """Writes the Markdown report; the interpretation is added by hand afterwards."""
    sections = ["\n".join(preamble), "## Measurements", *map(render_markdown, tables)]
    sections.append(
        "## Interpretation\n\n(Written by hand for the numbers above; re-running the bench "
        "replaces this file.)"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")


async def bench(config: Config, workdir: Path) -> list[Table]:
    """Runs every measurement, each on its own stack, and returns the tables."""
    startup = await measure_startups(config, workdir)
    offline = await measure_offline(config, workdir)
    fast_poll: list[RunObservation] = []
    fast_cpu: dict[str, float] = {}
    if config.compare_poll_seconds > 0:
        fast_poll, fast_cpu = await measure_poll_comparison(config, workdir)
    anthropic = await measure_anthropic(config, workdir)
    tables = [
        startup_table(startup),
        create_run_table(offline),
        end_to_end_table(offline),
        throughput_table(offline),
        delivery_table(config, offline, fast_poll),
    ]
    if fast_poll:
        tables.append(poll_comparison_table(config, offline, fast_poll, fast_cpu))
    tables += [
        cancel_table(config, anthropic),
        idle_streams_table(config, anthropic),
        cpu_table(offline),
        memory_table(offline, anthropic),
        database_table(offline),
    ]
    return tables


# -- command line ---------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(_positive_int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected C or C,C,... (e.g. 1,4,16)") from None
    return levels


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Reads the command line into a Config."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_runs",
        description="Measures Maestro's speed and memory over real processes and real gRPC.",
    )
    parser.add_argument(
        "--runs", type=_positive_int, default=100, help="sequential runs (default 100)"
    )
    parser.add_argument(
        "--concurrency",
        type=_levels,
        default=(1, 4, 16),
        help="concurrency level(s), e.g. 16 or 1,4,16 (default 1,4,16)",
    )
    parser.add_argument(
        "--throughput-runs", type=_positive_int, default=160, help="runs per level (default 160)"
    )
    parser.add_argument(
        "--startups", type=_positive_int, default=5, help="fresh stack starts (default 5)"
    )
    parser.add_argument(
        "--cancels", type=_positive_int, default=10, help="cancellations (default 10)"
    )
    parser.add_argument("--idle-streams", type=_positive_int, default=32, help="default 32")
    parser.add_argument("--idle-window", type=float, default=4.0, help="seconds (default 4)")
    parser.add_argument(
        "--poll-seconds", type=float, default=0.05, help="gateway poll (default 0.05)"
    )
    parser.add_argument(
        "--compare-poll-seconds",
        type=float,
        default=0.005,
        help="a second stack's gateway poll, for comparison; 0 skips it (default 0.005)",
    )
    parser.add_argument("--run-timeout", type=float, default=60.0, help="per run (default 60 s)")
    parser.add_argument("--budget", type=float, default=600.0, help="whole bench (default 600 s)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the stacks' databases and service logs here (default: a temp dir, removed)",
    )
    args = parser.parse_args(argv)
    return Config(
        runs=args.runs,
        concurrency=args.concurrency,
        throughput_runs=args.throughput_runs,
        startups=args.startups,
        cancels=args.cancels,
        idle_streams=args.idle_streams,
        idle_window=args.idle_window,
        poll_seconds=args.poll_seconds,
        compare_poll_seconds=args.compare_poll_seconds,
        run_timeout=args.run_timeout,
        budget=args.budget,
        out=args.out,
        workdir=args.workdir,
    )


async def _main(config: Config, workdir: Path) -> list[Table]:
    async with asyncio.timeout(config.budget):
        return await bench(config, workdir)


def run_in_workdir(config: Config) -> list[Table]:
    """Runs the bench in --workdir (kept) or in a temporary directory (removed)."""
    if config.workdir is None:
        with tempfile.TemporaryDirectory(prefix="maestro-bench-") as tmp:
            return asyncio.run(_main(config, Path(tmp)))
    config.workdir.mkdir(parents=True, exist_ok=True)
    if any(config.workdir.iterdir()):
        # Old databases would be re-driven and counted as this bench's.
        raise SystemExit(f"--workdir {config.workdir} is not empty")
    return asyncio.run(_main(config, config.workdir))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the bench; prints the tables and writes the Markdown report."""
    config = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = datetime.now(UTC)
    began = time.perf_counter()
    load_before = procs.load_average()
    try:
        tables = run_in_workdir(config)
    except TimeoutError:
        note(f"gave up: the bench exceeded its budget of {config.budget:g} s (last phase above)")
        return 1
    elapsed = time.perf_counter() - began
    preamble = list(header_lines(config, started, elapsed, load_before))
    print("\n".join(preamble[2:]) + "\n")
    print("\n\n".join(render_text(table) for table in tables))
    write_report(config.out, preamble, tables)
    note(f"wrote {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

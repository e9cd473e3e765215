"""Maestro beside the floors, over real processes: `python -m bench [--quick]`.

Runs W1-W4 through the real local stack (worker, scheduler, gateway as processes; the
public gateway API over gRPC) on SQLite and on PostgreSQL, interleaved round by round
with an asyncio floor, a gRPC floor and (if installed) LangGraph in this process; then
the other figures of issues 5 and 6 (event delivery to 100 followers, 500 idle
streams, 200 concurrent offline runs, start-up, CreateRun of 1,000 steps, parsing a
65 KB workflow). Prints the tables and writes them as Markdown (bench/RESULTS.md; a
--quick run writes bench/RESULTS-quick.md). A backend this commit's store cannot use
is reported as such, not failed.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import procs
from bench.figures import (
    StartupResults,
    measure_concurrent_runs,
    measure_create_large,
    measure_followers,
    measure_idle_streams,
    measure_parse,
    measure_startup,
)
from bench.floors import (
    FloorWorker,
    LangGraphRunner,
    asyncio_floor,
    floor_worker,
    langgraph_missing,
)
from bench.report import BackendResults, Results, all_tables
from bench.rounds import (
    ASYNCIO,
    GRPC,
    LANGGRAPH,
    Contender,
    MaestroContender,
    maestro_name,
    run_rounds,
)
from bench.stacks import (
    BENCH_ENV,
    POSTGRESQL,
    SQLITE,
    Backend,
    BackendUnsupported,
    database,
    open_stack,
)
from bench.stats import render_markdown, render_text
from bench.workloads import Workload, full_workloads, quick_workloads, tiny_workload

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Config:
    """What to measure and how much."""

    quick: bool
    rounds: int
    workloads: tuple[Workload, ...]
    backends: tuple[Backend, ...]
    langgraph: bool
    followers: int
    follower_steps: int
    follower_sleep_ms: int
    follower_rounds: int
    idle_streams: int
    idle_window: float
    concurrent_runs: int
    startups: int
    create_samples: int
    parse_bytes: int
    parse_samples: int
    run_timeout: float
    budget: float
    out: Path
    workdir: Path | None


_BEGAN = time.monotonic()


def note(message: str) -> None:
    """Progress on stderr (seconds since start first), so stdout holds only the tables."""
    print(f"[bench {time.monotonic() - _BEGAN:6.1f}s] {message}", file=sys.stderr, flush=True)


async def _main_stacks(
    config: Config, workdir: Path, results: Results, exits: AsyncExitStack
) -> dict[str, Contender]:
    """Starts one stack per supported backend; returns the Maestro contenders."""
    contenders: dict[str, Contender] = {}
    for backend, found in zip(config.backends, results.backends, strict=True):
        data_dir = workdir / backend.name / "main"
        try:
            url = await exits.enter_async_context(database(backend, "main", data_dir))
        except BackendUnsupported as err:
            found.unsupported, found.detail = "not supported by this commit", str(err)
            note(f"{backend.name}: {found.unsupported}: {err}")
            continue
        except RuntimeError as err:  # the database server could not be used
            found.unsupported, found.detail = "not measured", str(err)
            note(f"{backend.name}: not measured: {err}")
            continue
        stack, stub = await exits.enter_async_context(open_stack(data_dir, url))
        contender = MaestroContender(backend.name, stack, stub, config.run_timeout)
        results.maestro[maestro_name(backend.name)] = contender
        contenders[maestro_name(backend.name)] = contender.run
    return contenders


async def bench(config: Config, workdir: Path) -> Results:
    """Runs every measurement and returns the results."""
    results = Results(
        workloads=config.workloads,
        rounds=config.rounds,
        seconds={},
        backends=[BackendResults(b.name) for b in config.backends],
    )
    results.parse = await asyncio.to_thread(measure_parse, config.parse_bytes, config.parse_samples)
    note(f"parse: {min(results.parse.seconds) * 1000:.0f} ms at best")
    async with AsyncExitStack() as exits:
        contenders = await _main_stacks(config, workdir, results, exits)
        worker: FloorWorker = await exits.enter_async_context(floor_worker(workdir / "floor"))
        contenders[GRPC] = worker.run
        contenders[ASYNCIO] = asyncio_floor
        results.langgraph_missing = langgraph_missing() if config.langgraph else "skipped"
        if not results.langgraph_missing:
            contenders[LANGGRAPH] = LangGraphRunner().run
        warm = tiny_workload()
        for run in contenders.values():
            await run(warm)
        for contender in results.maestro.values():
            contender.runs.clear()
        results.seconds = await run_rounds(config.workloads, contenders, config.rounds, note=note)
        for backend in results.backends:
            found = results.maestro.get(maestro_name(backend.name))
            if found is None:
                continue
            for batched in (True, False):
                backend.followers[batched] = await measure_followers(
                    found.stack,
                    followers=config.followers,
                    steps=config.follower_steps,
                    sleep_ms=config.follower_sleep_ms,
                    rounds=config.follower_rounds,
                    timeout=config.run_timeout,
                    batched=batched,
                )
            note(f"{backend.name}: {config.followers} followers done (both streams)")
            backend.idle = await measure_idle_streams(
                found.stack,
                streams=config.idle_streams,
                window=config.idle_window,
                timeout=config.run_timeout,
            )
            note(f"{backend.name}: {config.idle_streams} idle streams done")
            backend.create = await measure_create_large(
                found.stub, samples=config.create_samples, timeout=config.run_timeout
            )
            note(f"{backend.name}: CreateRun of 1,000 steps done")
    for kind, measured in zip(config.backends, results.backends, strict=True):
        if not measured.unsupported:
            await _fresh_stack_figures(config, workdir, kind, measured)
    return results


async def _fresh_stack_figures(
    config: Config, workdir: Path, backend: Backend, found: BackendResults
) -> None:
    """Figures that need a stack of their own: concurrent runs, start-up."""
    for gated in (True, False):
        label = "concurrent" if gated else "concurrent-ungated"
        data_dir = workdir / backend.name / label
        async with (
            database(backend, label, data_dir) as url,
            open_stack(data_dir, url) as (stack, _),
        ):
            measured = await measure_concurrent_runs(
                stack, runs=config.concurrent_runs, timeout=config.run_timeout, gated=gated
            )
        if gated:
            found.concurrent = measured
        else:
            found.concurrent_ungated = measured
        note(
            f"{backend.name}: {config.concurrent_runs} concurrent runs of {measured.workflow} "
            f"in {measured.wall:.1f}s"
        )
    found.startup_offline, found.startup_anthropic = StartupResults(), StartupResults()
    for index in range(config.startups):
        for anthropic, into in ((False, found.startup_offline), (True, found.startup_anthropic)):
            label = f"startup-{'anthropic' if anthropic else 'offline'}-{index}"
            data_dir = workdir / backend.name / label
            async with database(backend, label, data_dir) as url:
                await measure_startup(data_dir, url, anthropic=anthropic, results=into)
    note(f"{backend.name}: {config.startups} start-ups of each kind done")


# -- report ----------------------------------------------------------------------------


def header_lines(
    config: Config, started: datetime, elapsed: float, load_before: str, speed_before: float
) -> Iterator[str]:
    """The Markdown preamble: when, where, how, and how busy the machine was."""
    machine = procs.machine_info(REPO)
    yield "# Maestro benchmark results"
    yield ""
    yield f"- Date: {started:%Y-%m-%d %H:%M} UTC (the bench took {elapsed:.0f} s)"
    yield (
        f"- Machine: nproc {machine['nproc']}, {machine['cpu']}, {machine['memory']} RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}"
    )
    yield (
        f"- Load average (1, 5, 15 min) before: {load_before}; after: {procs.load_average()} "
        "(the bench adds to it; other work on the machine shows here too)"
    )
    yield (
        f"- Host speed: a pure-Python loop (`sum(range(10**6))`, best of 5) took "
        f"{speed_before:.1f} ms before and {procs.python_speed_ms():.1f} ms after (lower is "
        "faster; hosts differ by 2-3x: compare runs by it)"
    )
    yield f"- Maestro commit: {machine['maestro commit']}"
    yield f"- Command: `{shlex.join(['python', '-m', 'bench', *sys.argv[1:]])}`"
    mode = "quick (smaller sizes, fewer rounds)" if config.quick else "full"
    yield (
        f"- Mode: {mode}; {config.rounds} rounds; backends: "
        + ", ".join(
            f"{b.name}" + (f" ({b.server_url})" if b.server_url else "") for b in config.backends
        )
    )
    env = " ".join(f"{k}={v}" for k, v in BENCH_ENV.items())
    yield (
        f"- Stack settings: LocalStack (every service its own process on 127.0.0.1), {env}; "
        "workload steps run on the worker's `bench` provider (sleep as named, one small "
        "file), one attempt each; the bench client runs on the same cores."
    )
    yield (
        f"- Other sizes: {config.followers} followers of a {config.follower_steps}-step "
        f"chain of {config.follower_sleep_ms} ms steps × {config.follower_rounds}; "
        f"{config.idle_streams} idle streams over {config.idle_window:g} s; "
        f"{config.concurrent_runs} concurrent runs; {config.startups} start-ups of each "
        f"kind; {config.create_samples} CreateRun samples; a {config.parse_bytes // 1024} KB "
        f"workflow parsed {config.parse_samples} times."
    )


def write_report(path: Path, preamble: Sequence[str], tables: Sequence[str]) -> None:
    """Writes the Markdown report; the interpretation is added by hand afterwards."""
    sections = ["\n".join(preamble), "## Measurements", *tables]
    sections.append(
        "## Interpretation\n\n(Written by hand for the numbers above; re-running the bench "
        "replaces this file.)"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")


# -- command line --------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _backends(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in (SQLITE, POSTGRESQL)]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected {SQLITE}, {POSTGRESQL} or both, comma-separated"
        )
    return names


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Reads the command line into a Config (quick or full sizes, then overrides)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measures Maestro beside an asyncio and a gRPC floor over real processes.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, 3 rounds: about a minute"
    )
    parser.add_argument("--rounds", type=_positive_int, help="default 5 (quick: 3)")
    parser.add_argument(
        "--backends",
        type=_backends,
        default=(SQLITE, POSTGRESQL),
        help="sqlite, postgresql or both (default both)",
    )
    parser.add_argument(
        "--postgres-url",
        "--database-url",
        dest="postgres_url",
        default=os.environ.get("MAESTRO_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server the bench creates (and drops) a fresh database on for each "
        f"stack; default MAESTRO_BENCH_POSTGRES_URL or {DEFAULT_POSTGRES_URL}",
    )
    parser.add_argument("--no-langgraph", action="store_true", help="skip LangGraph")
    parser.add_argument("--run-timeout", type=float, default=300.0, help="per run (default 300 s)")
    parser.add_argument("--budget", type=float, default=1800.0, help="whole bench (default 1800 s)")
    parser.add_argument(
        "--out", type=Path, help="default bench/RESULTS.md (quick: RESULTS-quick.md)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the stacks' databases and service logs here (default: a temp dir, removed)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    backends = tuple(
        Backend(name, args.postgres_url if name == POSTGRESQL else "") for name in args.backends
    )
    return Config(
        quick=quick,
        rounds=args.rounds or (3 if quick else 5),
        workloads=quick_workloads() if quick else full_workloads(),
        backends=backends,
        langgraph=not args.no_langgraph,
        followers=100,
        follower_steps=10 if quick else 20,
        follower_sleep_ms=50,
        follower_rounds=1 if quick else 3,
        idle_streams=100 if quick else 500,
        idle_window=2.0 if quick else 10.0,
        concurrent_runs=40 if quick else 200,
        startups=1 if quick else 5,
        create_samples=2 if quick else 10,
        parse_bytes=65 * 1024,
        parse_samples=2 if quick else 5,
        run_timeout=args.run_timeout,
        budget=args.budget,
        out=args.out or REPO / "bench" / ("RESULTS-quick.md" if quick else "RESULTS.md"),
        workdir=args.workdir.resolve() if args.workdir else None,
    )


async def _within_budget(config: Config, workdir: Path) -> Results:
    async with asyncio.timeout(config.budget):
        return await bench(config, workdir)


def run_in_workdir(config: Config) -> Results:
    """Runs the bench in --workdir (kept) or in a temporary directory (removed)."""
    if config.workdir is None:
        with tempfile.TemporaryDirectory(prefix="maestro-bench-") as tmp:
            return asyncio.run(_within_budget(config, Path(tmp)))
    config.workdir.mkdir(parents=True, exist_ok=True)
    if any(config.workdir.iterdir()):
        # Old databases would be re-driven and counted as this bench's.
        raise SystemExit(f"--workdir {config.workdir} is not empty")
    return asyncio.run(_within_budget(config, config.workdir))


SERVICE_PACKAGES = ("maestro", "gateway", "scheduler", "persona_service", "sandbox_service")


def compile_bytecode() -> None:
    """Compiles the services' modules to bytecode before anything is measured.

    A deployed service starts from bytecode (the image's pip compiled it at install);
    a checkout where PYTHONDONTWRITEBYTECODE is set (some CI and sandbox images) never
    keeps any, and each start-up would then also measure compiling the whole project.
    """
    for package in SERVICE_PACKAGES:
        compileall.compile_dir(REPO / package, quiet=1)
    note("the services' modules are compiled to bytecode, as in the image")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the bench; prints the tables and writes the Markdown report."""
    config = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = datetime.now(UTC)
    began = time.perf_counter()
    load_before = procs.load_average()
    speed_before = procs.python_speed_ms()
    compile_bytecode()
    try:
        results = run_in_workdir(config)
    except TimeoutError:
        note(f"gave up: the bench exceeded its budget of {config.budget:g} s")
        return 1
    elapsed = time.perf_counter() - began
    preamble = list(header_lines(config, started, elapsed, load_before, speed_before))
    tables = all_tables(results)
    print("\n".join(preamble[2:]) + "\n")
    print("\n\n".join(render_text(table) for table in tables))
    write_report(config.out, preamble, [render_markdown(table) for table in tables])
    note(f"wrote {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

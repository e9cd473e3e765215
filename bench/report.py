"""Turns the bench's results into tables (text for the terminal, Markdown for RESULTS.md).

Pure: data in, `Table`s out, so the unit tests can check every cell rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from bench.figures import (
    ConcurrentResults,
    CreateResults,
    FollowerResults,
    IdleResults,
    ParseResults,
    StartupResults,
)
from bench.rounds import (
    ASYNCIO,
    GRPC,
    LANGGRAPH,
    MaestroContender,
    MaestroRun,
    cpu_per_step,
    maestro_name,
)
from bench.stacks import BENCH_CLIENT
from bench.stats import Spread, Table, mib, ms, paired_ratios, percentile
from bench.workloads import Workload
from maestro.cli.stack import GATEWAY, SCHEDULER, SERVICES

NOT_MEASURED = "not measured"


@dataclass
class BackendResults:
    """Everything measured on one database backend (or why it could not be)."""

    name: str
    unsupported: str = ""
    """Why nothing was measured, as a table cell ('not supported by this commit')."""
    detail: str = ""
    """The error behind `unsupported`."""
    followers: dict[bool, FollowerResults] = field(default_factory=dict)
    """By stream: batched (StreamRunEventBatches, True) and one event per message."""
    idle: IdleResults | None = None
    concurrent: ConcurrentResults | None = None
    concurrent_ungated: ConcurrentResults | None = None
    """The same runs without the workflow's gate: the engine apart from the sandbox."""
    startup_offline: StartupResults | None = None
    startup_anthropic: StartupResults | None = None
    create: CreateResults | None = None


@dataclass
class Results:
    workloads: tuple[Workload, ...]
    rounds: int
    seconds: dict[tuple[str, str], list[float]]
    """Per (workload key, contender): one wall time per round."""
    backends: list[BackendResults]
    maestro: dict[str, MaestroContender] = field(default_factory=dict)
    langgraph_missing: str = ""
    parse: ParseResults | None = None


def value_spread(workload: Workload, seconds: Sequence[float]) -> Spread:
    """ms per step for no-op workloads, × ideal for sleeping ones."""
    spread = Spread.of(seconds)
    if workload.per_step:
        return spread.scaled(1000 / workload.size)
    return spread.scaled(1 / workload.ideal_seconds())


def unit(workload: Workload) -> str:
    return "ms/step" if workload.per_step else "× ideal"


def _cell(results: Results, workload: Workload, contender: str) -> str:
    samples = results.seconds.get((workload.key, contender), [])
    return value_spread(workload, samples).show() if samples else NOT_MEASURED


def _ratio_cell(results: Results, workload: Workload, backend: str) -> str:
    mine = results.seconds.get((workload.key, maestro_name(backend)), [])
    floor = results.seconds.get((workload.key, GRPC), [])
    if not mine or not floor:
        return NOT_MEASURED
    return Spread.of(paired_ratios(mine, floor)).show(1) + "×"


def workloads_table(results: Results) -> Table:
    """The headline: each workload, Maestro on each backend beside the floors."""
    headers = ["workload", "unit"]
    headers += [maestro_name(b.name) for b in results.backends]
    headers += [GRPC, ASYNCIO, LANGGRAPH]
    headers += [f"Maestro/gRPC floor ({b.name})" for b in results.backends]
    table = Table("W1–W4: Maestro beside the floors", tuple(headers))
    for workload in results.workloads:
        row = [f"{workload.key}: {workload.description}", unit(workload)]
        for backend in results.backends:
            row.append(backend.unsupported or _cell(results, workload, maestro_name(backend.name)))
        row += [_cell(results, workload, GRPC), _cell(results, workload, ASYNCIO)]
        row.append(results.langgraph_missing or _cell(results, workload, LANGGRAPH))
        for backend in results.backends:
            row.append(backend.unsupported or _ratio_cell(results, workload, backend.name))
        table.add(*row)
    table.note = (
        f"Median over {results.rounds} rounds (min–max in brackets); ratios are paired, "
        "Maestro's wall time divided by the gRPC floor's in the same round. Maestro: "
        "CreateRun call to the terminal event received on a stream opened right after it "
        "(StreamRunEventBatches, as the CLI follows a run: the public API as a client sees "
        "it). At most 100 steps in flight everywhere. "
        "ms/step = wall time / steps; × ideal = wall time / (critical path of sleeps, "
        "levelled by the cap). In each round every contender runs each workload once, "
        "in an order that rotates from round to round."
    )
    return table


def _maestro_runs(
    results: Results,
) -> Iterator[tuple[MaestroContender, Workload, list[MaestroRun]]]:
    """Each Maestro contender's runs of each workload it ran."""
    for contender in results.maestro.values():
        for workload in results.workloads:
            runs = contender.runs.get(workload.key, [])
            if runs:
                yield contender, workload, runs


def detail_table(results: Results) -> Table:
    """Where Maestro's time goes per workload: server time, CreateRun, CPU per step."""
    table = Table(
        "Maestro per workload: server time and CPU per step",
        (
            "backend",
            "workload",
            "client s",
            "server s",
            "CreateRun ms",
            *(f"{name} CPU ms/step" for name in (*SERVICES, BENCH_CLIENT)),
        ),
    )
    for contender, workload, runs in _maestro_runs(results):
        cpu = cpu_per_step(contender, workload)
        table.add(
            contender.backend,
            workload.key,
            Spread.of(r.seconds for r in runs).show(),
            Spread.of(r.server_seconds for r in runs).show(),
            Spread.of(r.create_seconds for r in runs).scaled(1000).show(1),
            *(f"{cpu[n]:.2f}" for n in (*SERVICES, BENCH_CLIENT)),
        )
    table.note = (
        "server = RUN_CREATED to the terminal event by the events' own timestamps. CPU: "
        "utime+stime from /proc/<pid>/stat over each run (10 ms ticks), mean over the "
        "rounds, divided by the steps; the bench client shares the 2 cores."
    )
    return table


def timeline_table(results: Results) -> Table:
    """Where each step's time went, from the events' own timestamps (bench/timeline.py)."""
    table = Table(
        "Maestro per workload: where each step's time goes",
        (
            "backend",
            "workload",
            "start lag p50 ms",
            "p90 ms",
            "in-step overhead p50 ms",
            "p90 ms",
            "first start ms",
            "end after last step ms",
        ),
    )
    for contender, workload, runs in _maestro_runs(results):
        lags = [lag for r in runs for lag in r.timeline.start_lags]
        overheads = [o for r in runs for o in r.timeline.in_step]
        table.add(
            contender.backend,
            workload.key,
            ms(percentile(lags, 50)),
            ms(percentile(lags, 90)),
            ms(percentile(overheads, 50)),
            ms(percentile(overheads, 90)),
            Spread.of(r.timeline.head for r in runs).scaled(1000).show(1),
            Spread.of(r.timeline.tail for r in runs).scaled(1000).show(1),
        )
    table.note = (
        "Per step, over every round's run: start lag = STEP_STARTED minus the moment the "
        "step could have started (its dependencies succeeded and, under the cap of 100, a "
        "slot was free): noticing it, admitting it and committing its start. In-step "
        "overhead = STEP_SUCCEEDED minus STEP_STARTED minus the step's sleep: the worker "
        "call, the answer and committing the result. First start = RUN_CREATED to the "
        "first STEP_STARTED; end = the last STEP_SUCCEEDED to RUN_SUCCEEDED (medians, "
        "min–max). Event times are stamped in the write transaction just before COMMIT."
    )
    return table


def transitions_table(results: Results) -> Table:
    """Step transitions per second on W1 (1,000 no-op steps, 100 in flight)."""
    table = Table(
        "Step transitions per second (W1)",
        ("backend", "steps", "steps/s", "transitions/s"),
    )
    w1 = next((w for w in results.workloads if w.key == "W1"), None)
    for backend in results.backends:
        contender = results.maestro.get(maestro_name(backend.name))
        runs = contender.runs.get("W1", []) if contender and w1 else []
        if backend.unsupported or not runs or w1 is None:
            table.add(backend.name, "", backend.unsupported or NOT_MEASURED, "")
            continue
        rate = Spread.of(w1.size / r.server_seconds for r in runs)
        table.add(backend.name, w1.size, rate.show(0), rate.scaled(2).show(0))
    table.note = (
        "steps/s = W1's steps / its server time (RUN_CREATED to RUN_SUCCEEDED); each step "
        "is two transitions (PENDING→RUNNING, RUNNING→SUCCEEDED), each committed with its "
        "events before the next."
    )
    return table


def _pct(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{share * 100:.1f}"


def _latency(values: Sequence[float]) -> tuple[str, str, str, str]:
    if not values:
        return "0", "n/a", "n/a", "n/a"
    return (
        str(len(values)),
        ms(percentile(values, 50)),
        ms(percentile(values, 99)),
        ms(max(values)),
    )


def stream_name(batched: bool) -> str:
    """How a client follows a run: the two event streams of the API."""
    return "batched" if batched else "per event"


def followers_table(results: Results) -> Table:
    table = Table(
        "Event delivery to followers of one run (commit → follower)",
        (
            "backend",
            "stream",
            "followers",
            "events",
            "messages",
            "p50 ms",
            "p99 ms",
            "max ms",
            "gateway % core",
            "bench client % core",
        ),
    )
    for backend in results.backends:
        if not backend.followers:
            table.add(
                backend.name, "", "", backend.unsupported or NOT_MEASURED, "", "", "", "", "", ""
            )
            continue
        for batched in (True, False):
            f = backend.followers.get(batched)
            if f is None:
                continue
            n, p50, p99, top = _latency(f.delays)
            share = {k: v / f.wall for k, v in f.cpu.items()} if f.wall else {}
            table.add(
                backend.name,
                stream_name(batched),
                f.followers,
                n,
                f.messages,
                p50,
                p99,
                top,
                _pct(share.get(GATEWAY, math.nan)),
                _pct(share.get(BENCH_CLIENT, math.nan)),
            )
    sample = next((f for b in results.backends for f in b.followers.values()), None)
    what = f"a chain of {sample.steps} bench steps" if sample else "a chain of bench steps"
    table.note = (
        "Each follower is its own connection and opens its stream right after CreateRun "
        f"of {what}: StreamRunEventBatches (batched: each message carries the events "
        "ready when it was sent) or StreamRunEvents (one message per event). A delay is "
        "receipt time minus the event's `time` (stamped in the write transaction just "
        "before COMMIT; one clock), for events committed after that stream opened; the "
        "events of one message share its receipt time. Percentiles are nearest-rank over "
        "all followers' events. CPU: /proc utime+stime over the runs, as a share of one "
        "core."
    )
    return table


def idle_table(results: Results) -> Table:
    table = Table(
        "Idle event streams: gateway CPU, then one cancel delivered to all",
        (
            "backend",
            "streams",
            "gateway % core, no stream",
            "gateway % core, streams",
            "scheduler % core, streams",
            "CancelRun ms",
            "RUN_CANCELLED p50 ms",
            "p99 ms",
        ),
    )
    for backend in results.backends:
        i = backend.idle
        if i is None:
            table.add(backend.name, "", backend.unsupported or NOT_MEASURED, *[""] * 5)
            continue
        _, p50, p99, _ = _latency(i.cancel_delays)
        table.add(
            backend.name,
            i.streams,
            _pct(i.cpu_without[GATEWAY]),
            _pct(i.cpu_with[GATEWAY]),
            _pct(i.cpu_with[SCHEDULER]),
            ms(i.cancel_rpc),
            p50,
            p99,
        )
    sample = next((b.idle for b in results.backends if b.idle), None)
    window = f"{sample.window:g} s" if sample else "a fixed window"
    table.note = (
        "A run whose one step sleeps 10 minutes in the worker; once its progress note is "
        f"stored nothing is committed. CPU is utime+stime from /proc over {window}, first "
        "with no stream, then with every stream open and past its replay (streams spread "
        "over connections of 5). Then CancelRun: its latency, and RUN_CANCELLED's delivery "
        "to every stream (receipt minus event time)."
    )
    return table


def concurrent_table(results: Results) -> Table:
    table = Table(
        "Concurrent offline runs of the default workflow (`sdlc-parallel`)",
        (
            "backend",
            "workflow",
            "runs",
            "failed",
            "CreateRun retries",
            "wall s",
            "runs/s",
            "e2e p50 s",
            "e2e max s",
            "scheduler RSS before MiB",
            "after MiB",
            "peak MiB",
            f"CPU ms/run ({', '.join(SERVICES)})",
            "sandbox checks CPU ms/run",
        ),
    )
    for backend in results.backends:
        measured = [c for c in (backend.concurrent, backend.concurrent_ungated) if c is not None]
        if not measured:
            table.add(backend.name, backend.unsupported or NOT_MEASURED, *[""] * 12)
        for c in measured:
            _concurrent_row(table, backend.name, c)
    table.note = (
        "A fresh stack; every run created at once (CreateRun and StreamRunEvents each, "
        "over connections of 10 runs), offline provider, every step of the default workflow "
        "(its gate's checks run in the sandbox, two runs' checks at a time). 'without its "
        "gate': the same workflow with the gate step left out (review follows packaging), "
        "on a fresh stack of its own: the engine and the worker apart from the sandbox. "
        "Its workflow is sent as YAML, whose validation admits a bounded number at once "
        "and refuses the rest with RESOURCE_EXHAUSTED and a time to retry after (1 s); the "
        "client retries then (the retries column), as a client should. "
        "wall = first CreateRun to the last terminal event received. CPU: /proc "
        "utime+stime of each service; the checks' is the sandbox service's cutime+cstime "
        "(its jails and the tools in them). RSS from "
        "/proc/<pid>/status (VmRSS; peak is VmHWM)."
    )
    return table


def _concurrent_row(table: Table, backend: str, c: ConcurrentResults) -> None:
    ok = [o for o in c.observations if o.succeeded]
    e2e = [o.end_to_end_seconds for o in ok]
    table.add(
        backend,
        c.workflow,
        c.runs,
        c.runs - len(ok),
        sum(o.create_retries for o in c.observations),
        f"{c.wall:.2f}",
        f"{len(ok) / c.wall:.1f}",
        f"{percentile(e2e, 50):.2f}" if e2e else "n/a",
        f"{max(e2e):.2f}" if e2e else "n/a",
        mib(c.memory_before[SCHEDULER].rss_kib),
        mib(c.memory_after[SCHEDULER].rss_kib),
        mib(c.memory_after[SCHEDULER].hwm_kib),
        ", ".join(f"{c.cpu[n] / c.runs * 1000:.0f}" for n in SERVICES),
        f"{c.checks_cpu / c.runs * 1000:.0f}",
    )


def startup_table(results: Results) -> Table:
    table = Table(
        "Time until the local stack is healthy",
        (
            "backend",
            "worker provider",
            "n",
            "whole stack p50 ms",
            "max ms",
            *(f"{n} p50 ms" for n in SERVICES),
            "stop p50 ms",
            "worker RSS MiB",
        ),
    )
    for backend in results.backends:
        for label, s in (
            ("offline", backend.startup_offline),
            ("anthropic configured", backend.startup_anthropic),
        ):
            if s is None or not s.totals:
                table.add(
                    backend.name,
                    label,
                    "",
                    backend.unsupported or NOT_MEASURED,
                    *[""] * (len(SERVICES) + 3),
                )
                continue
            table.add(
                backend.name,
                label,
                len(s.totals),
                ms(percentile(s.totals, 50)),
                ms(max(s.totals)),
                *(ms(percentile(s.per_service[n], 50)) for n in SERVICES),
                ms(percentile(s.stops, 50)),
                mib(int(percentile(s.worker_rss_kib, 50))),
            )
    table.note = (
        "Fresh stacks on fresh databases: a SQLite stack's schema is created first, then "
        "the four services start side by side; each is healthy once its port file is "
        "written and grpc.health says SERVING (LocalStack checks every 20 ms); whole stack "
        "= the first start to the last healthy. 'anthropic configured': "
        "ANTHROPIC_API_KEY set and the provider "
        "chosen, so the worker builds its Anthropic client at start (nothing is called)."
    )
    return table


def create_table(results: Results) -> Table:
    table = Table(
        "CreateRun of a 1,000-step workflow",
        ("backend", "steps", "YAML KiB", "n", "p50 ms", "max ms"),
    )
    for backend in results.backends:
        c = backend.create
        if c is None:
            table.add(backend.name, "", backend.unsupported or NOT_MEASURED, "", "", "")
            continue
        table.add(
            backend.name,
            c.steps,
            f"{c.yaml_bytes / 1024:.0f}",
            len(c.latencies),
            ms(percentile(c.latencies, 50)),
            ms(max(c.latencies)),
        )
    table.note = (
        "W1 (1,000 no-op bench steps) as workflow_yaml (compact JSON-style YAML), on the "
        "main stack after the rounds; from the call to its answer. Each run is followed to "
        "RUN_SUCCEEDED before the next sample."
    )
    return table


def parse_table(results: Results) -> Table:
    table = Table(
        "Parsing a large workflow (in-process, `parse_workflow_yaml`)",
        ("YAML KiB", "steps", "n", "p50 ms", "min ms", "max ms"),
    )
    p = results.parse
    if p is not None:
        spread = Spread.of(p.seconds)
        table.add(
            f"{p.yaml_bytes / 1024:.0f}",
            p.steps,
            len(p.seconds),
            ms(spread.median),
            ms(spread.low),
            ms(spread.high),
        )
    table.note = (
        "Block-style YAML as people write it (layers of 10 steps, two dependencies each, "
        "a timeout and instructions per step): YAML load plus validation, in the bench "
        "process, the way the scheduler does it for workflow_yaml."
    )
    return table


def _median_ratio(results: Results, key: str, backend: str) -> float:
    mine = results.seconds.get((key, maestro_name(backend)), [])
    floor = results.seconds.get((key, GRPC), [])
    return Spread.of(paired_ratios(mine, floor)).median if mine and floor else math.nan


def _median_ideal(results: Results, key: str, backend: str) -> float:
    workload = next((w for w in results.workloads if w.key == key), None)
    samples = results.seconds.get((key, maestro_name(backend)), [])
    return value_spread(workload, samples).median if workload and samples else math.nan


def goal_rows(results: Results, backend: BackendResults) -> list[tuple[str, str, float, float]]:
    """(figure, unit, measured, goal) for every goal of issue 6; NaN = not measured."""
    name = backend.name
    floor_goal = 3.0 if name == "sqlite" else 5.0
    rows = [
        ("W1 Maestro / gRPC floor", "×", _median_ratio(results, "W1", name), floor_goal),
        ("W2 Maestro / gRPC floor", "×", _median_ratio(results, "W2", name), floor_goal),
        ("W3 wall time / ideal", "×", _median_ideal(results, "W3", name), 1.10),
        ("W4 wall time / ideal", "×", _median_ideal(results, "W4", name), 1.10),
    ]
    for batched in (True, False):
        f = backend.followers.get(batched)
        how = stream_name(batched)
        rows.append(
            (
                f"followers ({how}): delivery p99",
                "ms",
                percentile(f.delays, 99) * 1000 if f and f.delays else math.nan,
                20.0,
            )
        )
        rows.append(
            (
                f"followers ({how}): gateway CPU",
                "% core",
                f.cpu[GATEWAY] / f.wall * 100 if f and f.wall else math.nan,
                25.0,
            )
        )
    i = backend.idle
    rows.append(
        ("idle streams: gateway CPU", "% core", i.cpu_with[GATEWAY] * 100 if i else math.nan, 2.0)
    )
    c = backend.concurrent
    rows.append(("concurrent offline runs: wall", "s", c.wall if c else math.nan, 5.0))
    rows.append(
        (
            "concurrent offline runs: scheduler peak RSS",
            "MiB",
            c.memory_after[SCHEDULER].hwm_kib / 1024 if c else math.nan,
            300.0,
        )
    )
    for label, s in (
        ("offline", backend.startup_offline),
        ("anthropic configured", backend.startup_anthropic),
    ):
        rows.append(
            (
                f"stack healthy ({label})",
                "s",
                percentile(s.totals, 50) if s and s.totals else math.nan,
                1.0,
            )
        )
    cr = backend.create
    rows.append(
        (
            "CreateRun of 1,000 steps (p50)",
            "ms",
            percentile(cr.latencies, 50) * 1000 if cr else math.nan,
            50.0,
        )
    )
    return rows


def goals_table(results: Results) -> Table:
    """Issue 6's goals beside what this run measured (all goals are upper bounds)."""
    table = Table(
        "Goals of issue 6 against this run",
        ("backend", "figure", "goal", "measured", "met"),
    )
    for backend in results.backends:
        if backend.unsupported:
            table.add(backend.name, "all", "", f"{backend.unsupported}: {backend.detail}", "")
            continue
        for figure, what, value, goal in goal_rows(results, backend):
            measured = "n/a" if math.isnan(value) else f"{value:.3g} {what}"
            met = "" if math.isnan(value) else ("yes" if value <= goal else "no")
            table.add(backend.name, figure, f"≤ {goal:g} {what}", measured, met)
    table.note = (
        "Sizes as run (a --quick run measures smaller workloads and fewer streams and "
        "runs than the goals name). Medians, except where a percentile is named."
    )
    return table


def all_tables(results: Results) -> list[Table]:
    return [
        goals_table(results),
        workloads_table(results),
        detail_table(results),
        timeline_table(results),
        transitions_table(results),
        followers_table(results),
        idle_table(results),
        concurrent_table(results),
        startup_table(results),
        create_table(results),
        parse_table(results),
    ]

"""Turns the measurements into tables, one per question the bench answers."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from bench.client import WORKFLOW, RunObservation
from bench.measure import (
    BENCH_CLIENT,
    FAKE_MODEL_DELAY_SECONDS,
    AnthropicResults,
    Config,
    OfflineResults,
    StartupResults,
)
from bench.stats import Summary, Table, mib, ms
from maestro.cli.stack import GATEWAY, SERVICES


def latency_row(label: str, values: Sequence[float]) -> tuple[str, ...]:
    """A row of `label, n, p50, p95, max` in milliseconds (NaNs left out)."""
    summary = Summary.of(v for v in values if not math.isnan(v))
    return (label, str(summary.count), ms(summary.p50), ms(summary.p95), ms(summary.max))


LATENCY_HEADERS = ("what", "n", "p50 ms", "p95 ms", "max ms")


def startup_table(startup: StartupResults) -> Table:
    """How long a fresh stack takes to become healthy, per service, and to stop."""
    table = Table(
        f"Stack start-up and stop ({len(startup.totals)} fresh stacks)",
        ("what", "n", "p50 ms", "max ms"),
        note=(
            "Services start one after the other, each once the previous one is healthy "
            "(port file written and grpc.health SERVING). LocalStack checks every 50 ms, so "
            "each service's figure includes up to 50 ms of that polling. Stop is SIGTERM to "
            "exit for all three (graceful drain)."
        ),
    )
    rows = [(f"{name} healthy", startup.per_service[name]) for name in SERVICES]
    rows += [("whole stack healthy", startup.totals), ("whole stack stopped", startup.stops)]
    for label, values in rows:
        summary = Summary.of(values)
        table.add(label, summary.count, ms(summary.p50), ms(summary.max))
    return table


def outcomes_note(observations: Sequence[RunObservation]) -> str:
    """`2 x CreateRun failed: NOT_FOUND` for the observations that did not succeed."""
    counts = Counter(o.outcome for o in observations if not o.succeeded)
    return ", ".join(f"{n} x {outcome}" for outcome, n in sorted(counts.items()))


def create_run_table(offline: OfflineResults) -> Table:
    """CreateRun latency, idle and at each concurrency level."""
    table = Table("CreateRun latency", ("what", "calls", "errors", "p50 ms", "p95 ms", "max ms"))
    phases = [("idle stack (sequential runs)", offline.sequential)]
    phases += [(f"C={lv.concurrency} runs in flight", lv.observations) for lv in offline.levels]
    errors: list[RunObservation] = []
    for label, observations in phases:
        failed = [o for o in observations if o.create_failed]
        errors += failed
        ok = Summary.of(o.create_seconds for o in observations if not o.create_failed)
        table.add(label, len(observations), len(failed), ms(ok.p50), ms(ok.p95), ms(ok.max))
    states = sorted({o.created_state for o in offline.sequential})
    table.note = (
        "From the call to the answer, successful calls only. The answer carries the run's "
        f"state at that moment ({', '.join(states)} in the sequential runs): CreateRun does "
        "not wait for the run."
    )
    if errors:
        table.note += f" Errors: {outcomes_note(errors)}."
    return table


def end_to_end_table(offline: OfflineResults) -> Table:
    """Sequential offline runs: client-observed and server-side durations."""
    runs = offline.sequential
    table = Table(
        f"End-to-end latency of one `{WORKFLOW}` offline run ({len(runs)} sequential runs)",
        LATENCY_HEADERS,
    )
    table.rows.append(
        latency_row(
            "client: CreateRun call -> terminal event", [o.end_to_end_seconds for o in runs]
        )
    )
    table.rows.append(
        latency_row("server: RUN_CREATED -> terminal event", [o.server_seconds for o in runs])
    )
    table.rows.append(
        latency_row(
            "difference (client - server)",
            [o.end_to_end_seconds - o.server_seconds for o in runs],
        )
    )
    failed = [o.outcome for o in runs if not o.succeeded]
    events = Summary.of(o.events for o in runs)
    table.note = (
        f"{len(runs) - len(failed)} of {len(runs)} runs succeeded"
        + (f" (others: {', '.join(sorted(set(failed)))})" if failed else "")
        + f"; {events.p50:.0f} events per run (p50). Server times are the events' own "
        "timestamps, so the difference is CreateRun plus the stream's delivery delay."
    )
    return table


def throughput_table(offline: OfflineResults) -> Table:
    """Closed-loop throughput at each concurrency."""
    table = Table(
        "Throughput (closed loop: C runs in flight until all have finished)",
        ("C", "runs", "failed", "wall s", "runs/s", "e2e p50 ms", "e2e p95 ms", "e2e max ms"),
    )
    failures: list[RunObservation] = []
    for level in offline.levels:
        succeeded = [o for o in level.observations if o.succeeded]
        failures += [o for o in level.observations if not o.succeeded]
        e2e = Summary.of(o.end_to_end_seconds for o in succeeded)
        table.add(
            level.concurrency,
            len(level.observations),
            len(level.observations) - len(succeeded),
            f"{level.wall_seconds:.2f}",
            f"{len(succeeded) / level.wall_seconds:.1f}",
            ms(e2e.p50),
            ms(e2e.p95),
            ms(e2e.max),
        )
    table.note = (
        "runs/s counts only runs the client saw succeed; e2e is CreateRun call to terminal "
        "event received."
    )
    if failures:
        table.note += f" Failed: {outcomes_note(failures)}."
    return table


def delivery_table(
    config: Config, offline: OfflineResults, fast_poll: list[RunObservation]
) -> Table:
    """Event delivery delay: receipt on a live stream minus the event's `time`."""
    table = Table(
        "Event delivery latency (event `time` -> received by a live stream)", LATENCY_HEADERS
    )
    poll = f"poll {ms(config.poll_seconds)} ms"

    def delays(observations: Sequence[RunObservation]) -> list[float]:
        return [d for o in observations for d in o.delivery_seconds]

    table.rows.append(
        latency_row(f"{poll}, 1 stream (sequential runs)", delays(offline.sequential))
    )
    for level in offline.levels:
        if level.concurrency > 1:
            table.rows.append(
                latency_row(f"{poll}, {level.concurrency} streams", delays(level.observations))
            )
    if fast_poll:
        fast = f"poll {ms(config.compare_poll_seconds)} ms"
        table.rows.append(latency_row(f"{fast}, 1 stream (sequential runs)", delays(fast_poll)))
    table.note = (
        "Only events committed after the stream was opened count (earlier ones are a "
        "replay). `time` is stamped inside the write transaction just before COMMIT; "
        "client and services share one clock."
    )
    return table


def poll_comparison_table(
    config: Config,
    offline: OfflineResults,
    fast_poll: list[RunObservation],
    fast_cpu: dict[str, float],
) -> Table:
    """What a shorter poll interval buys and costs, on sequential runs."""
    table = Table(
        "Gateway poll interval: sequential runs compared",
        (
            "poll ms",
            "client e2e p50 ms",
            "client e2e p95 ms",
            "server p50 ms",
            "gateway CPU ms/run",
            "all services CPU ms/run",
        ),
    )
    for poll, runs, cpu in (
        (config.poll_seconds, offline.sequential, offline.sequential_cpu),
        (config.compare_poll_seconds, fast_poll, fast_cpu),
    ):
        ok = [o for o in runs if o.succeeded]
        e2e = Summary.of(o.end_to_end_seconds for o in ok)
        server = Summary.of(o.server_seconds for o in ok)
        services = sum(cpu[name] for name in SERVICES)
        table.add(
            ms(poll),
            ms(e2e.p50),
            ms(e2e.p95),
            ms(server.p50),
            ms(cpu[GATEWAY] / len(runs)),
            ms(services / len(runs)),
        )
    table.note = (
        "server = RUN_CREATED to terminal event, by the events' own timestamps. CPU from "
        "/proc (10 ms ticks) over the whole phase, divided by its runs."
    )
    return table


def cpu_table(offline: OfflineResults) -> Table:
    """CPU time per run of each process, sequential and at the highest concurrency."""
    busiest = offline.levels[-1]
    table = Table(
        "CPU time per offline run",
        ("process", "sequential ms/run", f"C={busiest.concurrency} ms/run"),
    )
    phases = (
        (offline.sequential_cpu, len(offline.sequential)),
        (busiest.cpu, len(busiest.observations)),
    )
    for name in (*SERVICES, BENCH_CLIENT):
        table.add(name, *(ms(cpu[name] / runs) for cpu, runs in phases))
    table.add(
        "wall time per run",
        ms(sum(o.end_to_end_seconds for o in offline.sequential) / len(offline.sequential)),
        ms(busiest.wall_seconds / len(busiest.observations)),
    )
    table.note = (
        "utime+stime from /proc/<pid>/stat over the phase, divided by its runs; the bench "
        "client shares the machine's cores with the services."
    )
    return table


def memory_table(offline: OfflineResults, anthropic: AnthropicResults) -> Table:
    """RSS of each service after start-up and after the runs, and the peak."""
    table = Table(
        "Memory of each service process",
        ("stack", "service", "RSS after start MiB", "RSS after runs MiB", "peak (VmHWM) MiB"),
    )
    for stack, started, after in (
        ("offline (all runs)", offline.memory_started, offline.memory_after),
        ("anthropic (cancels)", anthropic.memory_started, anthropic.memory_after),
    ):
        for name in SERVICES:
            table.add(
                stack,
                name,
                mib(started[name].rss_kib),
                mib(after[name].rss_kib),
                mib(after[name].hwm_kib),
            )
    return table


def database_table(offline: OfflineResults) -> Table:
    """The SQLite store's size after every offline run."""
    rows, live = offline.rows, offline.database_live
    runs = max(rows["runs"], 1)
    table = Table("SQLite database after the offline runs", ("what", "value"))
    table.add("runs", rows["runs"])
    table.add("events (per run)", f"{rows['events']} ({rows['events'] / runs:.0f})")
    table.add("artifacts (per run)", f"{rows['artifacts']} ({rows['artifacts'] / runs:.0f})")
    table.add("artifact content", f"{rows['artifact bytes'] / 2**20:.2f} MiB")
    table.add("maestro.db while running", f"{live['db'] / 2**20:.2f} MiB")
    table.add("maestro.db-wal while running", f"{live['-wal'] / 2**20:.2f} MiB")
    table.add("maestro.db after stop", f"{offline.database_stopped / 2**20:.2f} MiB")
    table.add("bytes per run (after stop)", f"{offline.database_stopped / runs / 1024:.1f} KiB")
    return table


def cancel_table(config: Config, anthropic: AnthropicResults) -> Table:
    """Cancellation latency with a model call in flight."""
    table = Table(
        "Cancellation latency (worker inside a model call; fake Anthropic API)", LATENCY_HEADERS
    )
    table.rows.append(latency_row("CancelRun call -> it returned", anthropic.cancel_rpc))
    table.rows.append(
        latency_row("CancelRun call -> RUN_CANCELLED received", anthropic.cancel_event)
    )
    table.note = (
        f"{config.cancels} `{WORKFLOW}` runs with provider anthropic; the fake holds every "
        f"request {FAKE_MODEL_DELAY_SECONDS:.0f} s, and each cancel is sent once the "
        "first step's request has reached it. RUN_CANCELLED is committed before CancelRun "
        "returns; the rest is the live stream's wait for its next poll, between 0 and one "
        "poll interval depending on the phase."
    )
    return table


def idle_streams_table(config: Config, anthropic: AnthropicResults) -> Table:
    """What open streams cost the gateway while nothing happens."""
    table = Table(
        "Cost of idle live streams (run stalled in a model call)",
        ("open streams", "gateway CPU % of one core"),
    )
    table.add(0, f"{anthropic.gateway_cpu_idle * 100:.1f}")
    table.add(config.idle_streams, f"{anthropic.gateway_cpu_streams * 100:.1f}")
    per_stream = (anthropic.gateway_cpu_streams - anthropic.gateway_cpu_idle) / config.idle_streams
    table.note = (
        f"Sampled over {config.idle_window:g} s each. About {per_stream * 100:.2f}% of a core "
        f"per stream: each polls the store every {config.poll_seconds:g} s with two queries, "
        "whether or not anything changed."
    )
    return table

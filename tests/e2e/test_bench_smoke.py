"""The bench harness, once through the real stack, so it cannot rot.

The smallest workload runs through `python -m bench`'s own code (a LocalStack with the
bench provider enabled, the public gateway API) and through both floors (asyncio, and
a gRPC floor worker process). No timing is asserted: timings belong in bench/.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from bench.bench_remote_db import round_trip_ms, start_proxy, via_port
from bench.client import bench_request, create_run, follow
from bench.floors import asyncio_floor, floor_worker
from bench.report import BackendResults, Results, all_tables
from bench.rounds import ASYNCIO, GRPC, MaestroContender, maestro_name, run_rounds
from bench.stacks import SQLITE, Backend, database, open_stack
from bench.stats import render_markdown
from bench.workloads import tiny_workload
from maestro.api.gateway.v1 import gateway_pb2
from tests.support.databases import ADMIN_URL


async def test_the_smallest_workload_runs_through_the_stack_and_both_floors(
    tmp_path: Path,
) -> None:
    workload = tiny_workload()
    data_dir = tmp_path / "stack"
    async with (
        database(Backend(SQLITE), "smoke", data_dir) as url,
        open_stack(data_dir, url) as (stack, stub),
        floor_worker(tmp_path / "floor") as worker,
    ):
        maestro = MaestroContender(SQLITE, stack, stub, timeout=60)
        contenders = {maestro_name(SQLITE): maestro.run, GRPC: worker.run, ASYNCIO: asyncio_floor}
        seconds = await run_rounds([workload], contenders, 1, note=lambda _: None)

        run = await create_run(stub, bench_request(workload.workflow_yaml()))
        events = await follow(stub, run.name, timeout=60)
        final = await stub.GetRun(gateway_pb2.GetRunRequest(name=run.name), timeout=10)

    assert set(seconds) == {(workload.key, name) for name in contenders}
    assert all(len(samples) == 1 and samples[0] > 0 for samples in seconds.values())
    (sample,) = maestro.runs[workload.key]
    assert sample.server_seconds > 0 and sample.create_seconds > 0
    assert events[-1].event.type == gateway_pb2.EVENT_TYPE_RUN_SUCCEEDED
    assert len(final.steps) == workload.size
    assert {step.provider for step in final.steps} == {"bench"}

    results = Results(
        workloads=(workload,),
        rounds=1,
        seconds=seconds,
        backends=[BackendResults(SQLITE)],
        maestro={maestro_name(SQLITE): maestro},
        langgraph_missing="skipped",
    )
    markdown = "\n".join(render_markdown(table) for table in all_tables(results))
    assert "| tiny: 2 layers × 3 no-op steps | ms/step |" in markdown
    assert "Maestro/gRPC floor (sqlite)" in markdown  # the paired ratio column


def test_the_delay_proxy_adds_its_delay_each_way_and_forwards_everything() -> None:
    # bench/bench_remote_db.py measures Maestro over a slower link by putting this
    # proxy between the stack and PostgreSQL: queries must work through it, slower by
    # the delay it was given, each way.
    proxy, port = start_proxy(ADMIN_URL, one_way_us=20_000)
    try:
        through = via_port(ADMIN_URL, port)
        with psycopg.connect(through, autocommit=True, connect_timeout=10) as conn:
            payload = "x" * 200_000  # more than one read's worth each way
            assert conn.execute("SELECT %s::text", (payload,)).fetchone() == (payload,)
        assert round_trip_ms(through, queries=5) >= 40
        assert round_trip_ms(ADMIN_URL, queries=5) < 40
    finally:
        proxy.kill()
        proxy.wait()

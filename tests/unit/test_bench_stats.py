"""The bench's pure parts: statistics, workload shapes and the report's table rules."""

from __future__ import annotations

import math

import pytest

from bench.figures import FollowerResults
from bench.report import (
    NOT_MEASURED,
    BackendResults,
    Results,
    followers_table,
    goal_rows,
    transitions_table,
    value_spread,
    workloads_table,
)
from bench.rounds import ASYNCIO, GRPC, LANGGRAPH, maestro_name
from bench.stacks import BENCH_CLIENT
from bench.stats import Spread, Table, paired_ratios, percentile, render_markdown, render_text
from bench.workloads import Step, full_workloads, ideal_seconds, w1, w2, w3, w4
from maestro.cli.stack import GATEWAY


def test_percentile_is_nearest_rank() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 99) == 5.0
    assert percentile(values, 1) == 1.0
    assert percentile(list(range(1, 101)), 99) == 99


def test_spread_median_of_odd_and_even_counts() -> None:
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(3, 2.0, 1.0, 3.0)
    assert Spread.of([4.0, 1.0, 2.0, 3.0]) == Spread(4, 2.5, 1.0, 4.0)
    empty = Spread.of([])
    assert empty.count == 0 and math.isnan(empty.median)
    assert empty.show() == "n/a"


def test_spread_scales_and_shows() -> None:
    spread = Spread.of([2.0, 1.0, 3.0]).scaled(1000)
    assert spread == Spread(3, 2000.0, 1000.0, 3000.0)
    assert Spread.of([1.5, 1.25, 2.0]).show() == "1.50 (1.25–2.00)"
    assert Spread.of([1.5]).show(1) == "1.5"


def test_paired_ratios_pair_round_by_round() -> None:
    assert paired_ratios([10.0, 30.0], [2.0, 3.0]) == [5.0, 10.0]
    with pytest.raises(ValueError, match="paired"):
        paired_ratios([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="zero or negative"):
        paired_ratios([1.0], [0.0])


def test_table_rejects_a_row_of_the_wrong_width_and_aligns_numbers() -> None:
    table = Table("t", ("name", "ms"))
    with pytest.raises(ValueError, match="3 cells for 2 columns"):
        table.add("a", 1, 2)
    table.add("alpha", "12.5")
    table.add("b", "n/a")
    markdown = render_markdown(table)
    assert "|---|---:|" in markdown  # labels left, numbers right
    assert render_text(table).splitlines()[3] == "alpha  12.5"


def test_workload_shapes_match_issue_6() -> None:
    one, two, three, four = full_workloads()
    assert (one.size, two.size, three.size, four.size) == (1000, 200, 40, 500)
    steps = {s.id: s for s in one.steps}
    assert steps["s3-7"].depends_on == ("s2-7",) and steps["s0-7"].depends_on == ()
    assert all(s.sleep_ms == 0 for s in one.steps + two.steps)
    assert steps["s9-99"].depends_on == ("s8-99",)
    assert two.steps[5].depends_on == ("c4",)
    full = {s.id: s for s in three.steps}
    assert full["s2-0"].depends_on == tuple(f"s1-{i}" for i in range(10))
    assert all(not s.depends_on and s.sleep_ms == 200 for s in four.steps)
    assert {w.in_flight for w in (one, two, three, four)} == {100}


def test_ideal_time_is_the_critical_path_or_the_caps_waves() -> None:
    assert w3().ideal_seconds() == pytest.approx(0.4)  # 4 layers of 100 ms
    assert w4().ideal_seconds() == pytest.approx(1.0)  # 500 × 200 ms in waves of 100
    assert w1().ideal_seconds() == 0.0
    uneven = [Step("a", (), 100), Step("b", ("a",), 300), Step("c", (), 50)]
    assert ideal_seconds(uneven, 100) == pytest.approx(0.4)


def test_workflow_yaml_is_a_valid_workflow_of_bench_steps() -> None:
    from maestro.workflow import parse_workflow_yaml

    spec = parse_workflow_yaml(w3(layers=2, width=2).workflow_yaml())
    assert [s.id for s in spec.steps] == ["s0-0", "s0-1", "s1-0", "s1-1"]
    assert spec.step("s1-1").depends_on == ("s0-0", "s0-1")
    assert spec.step("s1-1").instructions == "sleep 100ms"
    assert spec.retry.max_attempts == 1
    assert parse_workflow_yaml(w2(length=2).workflow_yaml()).step("c1").instructions == ""


def _results(maestro: list[float], floor: list[float], *, unsupported: bool) -> Results:
    workload = w1(layers=1, width=10)
    postgres = BackendResults("postgresql")
    if unsupported:
        postgres.unsupported, postgres.detail = "not supported by this commit", "no driver"
    seconds = {
        ("W1", maestro_name("sqlite")): maestro,
        ("W1", GRPC): floor,
        ("W1", ASYNCIO): [0.001, 0.001],
    }
    return Results(
        workloads=(workload,),
        rounds=len(maestro),
        seconds=seconds,
        backends=[BackendResults("sqlite"), postgres],
        langgraph_missing="not installed",
    )


def test_workloads_table_shows_per_step_values_paired_ratios_and_gaps() -> None:
    results = _results([0.10, 0.30], [0.01, 0.02], unsupported=True)
    table = workloads_table(results)
    row = dict(zip(table.headers, table.rows[0], strict=True))
    assert row["unit"] == "ms/step"
    assert row[maestro_name("sqlite")] == "20.00 (10.00–30.00)"  # 10 steps
    assert row[GRPC] == "1.50 (1.00–2.00)"
    assert row["Maestro/gRPC floor (sqlite)"] == "12.5 (10.0–15.0)×"  # 10× and 15×
    assert row[maestro_name("postgresql")] == "not supported by this commit"
    assert row[LANGGRAPH] == "not installed"


def test_value_spread_for_sleeping_workloads_is_a_multiple_of_ideal() -> None:
    assert value_spread(w3(), [0.8, 0.4, 0.6]).median == pytest.approx(1.5)


def test_missing_samples_are_said_not_zero() -> None:
    results = _results([0.1], [0.01], unsupported=False)
    table = transitions_table(results)
    assert table.rows[0][2] == NOT_MEASURED  # no per-run details recorded
    rows = {figure: value for figure, _, value, _ in goal_rows(results, results.backends[0])}
    assert rows["W1 Maestro / gRPC floor"] == pytest.approx(10.0)
    assert math.isnan(rows["followers (batched): delivery p99"])
    assert math.isnan(rows["followers (per event): gateway CPU"])


def test_followers_are_reported_for_each_stream_with_their_messages() -> None:
    results = _results([0.1], [0.01], unsupported=True)
    sqlite = results.backends[0]
    for batched, messages in ((True, 40), (False, 90)):
        sqlite.followers[batched] = FollowerResults(
            followers=2,
            steps=3,
            batched=batched,
            delays=[0.010, 0.030] if batched else [0.020, 0.050],
            messages=messages,
            wall=2.0,
            cpu={GATEWAY: 0.5, BENCH_CLIENT: 0.25},
        )
    table = followers_table(results)
    rows = [dict(zip(table.headers, row, strict=True)) for row in table.rows]
    assert [(r["backend"], r["stream"], r["messages"], r["p99 ms"]) for r in rows[:2]] == [
        ("sqlite", "batched", "40", "30.0"),
        ("sqlite", "per event", "90", "50.0"),
    ]
    assert rows[0]["gateway % core"] == "25.0"
    assert rows[2]["events"] == "not supported by this commit"
    goals = {figure: value for figure, _, value, _ in goal_rows(results, sqlite)}
    assert goals["followers (batched): delivery p99"] == pytest.approx(30.0)
    assert goals["followers (per event): gateway CPU"] == pytest.approx(25.0)

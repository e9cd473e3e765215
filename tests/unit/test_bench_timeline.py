"""The bench's timeline of a run: each step's start lag and overhead, from event times."""

from __future__ import annotations

import pytest

from bench.timeline import RUN_CREATED, STEP_STARTED, STEP_SUCCEEDED, Stamp, timeline
from bench.workloads import Step, Workload


def _stamps(created: float, steps: dict[str, tuple[float, float]], end: float) -> list[Stamp]:
    stamps = [Stamp(RUN_CREATED, "", created)]
    for step_id, (started, ended) in steps.items():
        stamps += [Stamp(STEP_STARTED, step_id, started), Stamp(STEP_SUCCEEDED, step_id, ended)]
    stamps.sort(key=lambda s: s.time)
    return [*stamps, Stamp("RUN_SUCCEEDED", "", end)]


def test_a_chain_splits_into_start_lags_and_overheads_beyond_the_sleep() -> None:
    chain = Workload("c", "a chain", (Step("a", (), 100), Step("b", ("a",), 100)), per_step=False)
    line = timeline(chain, _stamps(10.0, {"a": (10.002, 10.105), "b": (10.108, 10.210)}, 10.211))
    assert line.start_lags == pytest.approx([0.002, 0.003])  # from creation, then from a's end
    assert line.in_step == pytest.approx([0.003, 0.002])  # 103 and 102 ms for 100 ms sleeps
    assert [line.head, line.tail] == pytest.approx([0.002, 0.001])


def test_under_the_cap_a_step_could_start_only_when_a_slot_was_free() -> None:
    # Three independent steps, one in flight at a time: b waits for a, c for b.
    capped = Workload(
        "w", "independent", tuple(Step(s, (), 0) for s in "abc"), per_step=True, in_flight=1
    )
    stamps = _stamps(0.0, {"a": (0.001, 0.002), "b": (0.004, 0.005), "c": (0.010, 0.011)}, 0.012)
    assert timeline(capped, stamps).start_lags == pytest.approx([0.001, 0.002, 0.005])


def test_a_step_that_ran_twice_or_never_is_refused() -> None:
    one = Workload("o", "one", (Step("a", (), 0),), per_step=True)
    twice = [*_stamps(0.0, {"a": (0.1, 0.2)}, 0.3)]
    twice.insert(3, Stamp(STEP_STARTED, "a", 0.25))
    with pytest.raises(ValueError, match="two STEP_STARTED"):
        timeline(one, twice)
    with pytest.raises(ValueError, match="did not start and succeed"):
        timeline(one, [Stamp(RUN_CREATED, "", 0.0), Stamp("RUN_FAILED", "", 0.1)])

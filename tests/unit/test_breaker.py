"""The circuit breaker's arithmetic: opens on sustained overload, probes, closes."""

from scheduler.breaker import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    breaker_wait,
    probe_ended,
    record_overload,
    record_success,
)

T0 = 1_000_000.0


def test_the_breaker_opens_on_sustained_overload_probes_and_closes() -> None:
    policy = BreakerPolicy(threshold=3, window=60, cool_down=30)
    breaker = Breaker()
    assert not record_overload(breaker, policy, T0)
    assert not record_overload(breaker, policy, T0 + 100)  # the first fell out of the window
    assert not record_overload(breaker, policy, T0 + 101)
    assert record_overload(breaker, policy, T0 + 102)
    assert breaker.state is BreakerState.OPEN
    assert breaker_wait(breaker, policy, T0 + 110) == 22.0
    assert breaker_wait(breaker, policy, T0 + 133) == 0.0  # cooled down: one probe
    assert breaker.state.value == "half_open"
    assert breaker_wait(breaker, policy, T0 + 133) > 0  # only one
    assert record_overload(breaker, policy, T0 + 134)  # the probe failed: open again
    assert breaker_wait(breaker, policy, T0 + 170) == 0.0
    assert record_success(breaker)
    assert breaker.state.value == "closed"
    assert breaker_wait(breaker, policy, T0 + 170) == 0.0


def test_a_probe_that_ends_without_an_answer_lets_the_next_call_probe() -> None:
    policy = BreakerPolicy(threshold=1, window=60, cool_down=1)
    breaker = Breaker()
    assert record_overload(breaker, policy, T0)
    assert breaker_wait(breaker, policy, T0 + 2) == 0.0
    assert breaker_wait(breaker, policy, T0 + 2) > 0
    probe_ended(breaker)
    assert breaker_wait(breaker, policy, T0 + 2) == 0.0


def test_success_while_closed_changes_nothing() -> None:
    assert not record_success(Breaker())

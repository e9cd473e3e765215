"""Model capacity arithmetic: token buckets, the API's reports, the circuit breaker."""

import pytest

from scheduler.capacity import (
    BreakerPolicy,
    BreakerState,
    Demand,
    Limits,
    ModelCapacity,
    RateLimitReport,
    breaker_allows,
    estimate_demand,
    parse_limits,
    record_overload,
    record_success,
)

T0 = 1_000_000.0


def _capacity(rpm: float = 60, input_tpm: float = 6000, output_tpm: float = 600) -> ModelCapacity:
    return ModelCapacity.fresh("m", Limits(rpm, input_tpm, output_tpm), T0)


def test_a_bucket_admits_up_to_its_limit_then_refills_over_the_minute() -> None:
    capacity = _capacity(rpm=60)
    call = Demand(1, 10, 10)
    for _ in range(60):
        assert capacity.wait_for(call, T0) == (0.0, "")
        capacity.take(call, T0)
    wait, why = capacity.wait_for(call, T0)
    assert wait == pytest.approx(1.0)  # 60 per minute: one more each second
    assert "requests per minute (60) of m" in why
    assert capacity.wait_for(call, T0 + 1.0)[0] == 0.0


def test_the_tightest_dimension_decides() -> None:
    capacity = _capacity(rpm=1000, input_tpm=6000, output_tpm=600)
    capacity.take(Demand(1, 100, 600), T0)  # output bucket now empty
    wait, why = capacity.wait_for(Demand(1, 100, 300), T0)
    assert wait == pytest.approx(30.0)  # 300 of 600/min
    assert why.startswith("output_tokens per minute")


def test_settling_gives_back_what_was_not_used_and_charges_what_was() -> None:
    capacity = _capacity(output_tpm=600)
    estimate = Demand(1, 0, 500)
    capacity.take(estimate, T0)
    capacity.settle(estimate, Demand(1, 0, 100), T0)
    assert capacity.buckets["output_tokens"].level == pytest.approx(500)  # type: ignore[index]
    capacity.settle(Demand(1, 0, 0), Demand(1, 0, 900), T0)
    assert capacity.wait_for(Demand(0, 0, 1), T0)[0] > 0  # in debt: later calls wait


def test_a_demand_bigger_than_the_bucket_is_let_through_when_full() -> None:
    capacity = _capacity(input_tpm=1000)
    assert capacity.wait_for(Demand(1, 50_000, 0), T0)[0] == 0.0


def test_the_api_s_report_overrides_the_estimate_and_a_429_pauses_everyone() -> None:
    capacity = _capacity(rpm=50)
    capacity.observe(
        RateLimitReport(requests_limit=1000, requests_remaining=3, retry_after=None), T0
    )
    requests = capacity.buckets["requests"]  # type: ignore[index]
    assert (requests.capacity, requests.level) == (1000, 3)
    capacity.observe(RateLimitReport(retry_after=12), T0)
    wait, why = capacity.wait_for(Demand(), T0)
    assert wait == pytest.approx(12) and "retry-after" in why


def test_estimates_count_bytes_as_quarter_tokens_and_output_at_its_cap() -> None:
    assert estimate_demand(4001, 32000) == Demand(1, 1001, 32000)


def test_limits_parse_strictly() -> None:
    assert parse_limits('{"*": {"rpm": 100}}') == {"*": Limits(rpm=100)}
    for bad in ("[1]", '{"m": 5}', '{"m": {"rps": 1}}', '{"m": {"rpm": -1}}'):
        with pytest.raises(ValueError):
            parse_limits(bad)


def test_the_breaker_opens_on_sustained_overload_probes_and_closes() -> None:
    policy = BreakerPolicy(threshold=3, window=60, cool_down=30)
    capacity = _capacity()
    assert not record_overload(capacity, policy, T0)
    assert not record_overload(capacity, policy, T0 + 100)  # the first fell out of the window
    assert not record_overload(capacity, policy, T0 + 101)
    assert record_overload(capacity, policy, T0 + 102)
    assert capacity.breaker is BreakerState.OPEN
    assert not breaker_allows(capacity, policy, T0 + 110)
    assert breaker_allows(capacity, policy, T0 + 133)  # cooled down: one probe
    assert capacity.breaker.value == "half_open"
    assert not breaker_allows(capacity, policy, T0 + 133)  # only one
    assert record_overload(capacity, policy, T0 + 134)  # the probe failed: open again
    assert breaker_allows(capacity, policy, T0 + 170)
    assert record_success(capacity)
    assert capacity.breaker.value == "closed"

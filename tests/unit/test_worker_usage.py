"""Prices, model settings, the usage meter and budgets of the persona worker."""

from __future__ import annotations

import pytest

from persona_service.catalog import (
    DEFAULT_PRICES,
    ModelPrice,
    PriceTable,
    base_name,
    is_known,
    supports_adaptive_thinking,
    supports_effort,
)
from persona_service.claude import Claude
from persona_service.models import Budget, FailureKind, StepFailed, TokenUsage
from persona_service.usage import UsageMeter


def test_sonnet_5_5_is_priced_from_the_pricing_page() -> None:
    cost = PriceTable().cost(
        "claude-sonnet-5-5",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read=1_000_000,
        cache_write_5m=1_000_000,
        cache_write_1h=1_000_000,
    )
    # $2 input + $10 output + $0.10 cache read + $2.50 and $4 cache writes.
    assert cost == pytest.approx(18.60)


def test_dated_names_use_their_model_s_price_and_unknown_models_have_none() -> None:
    table = PriceTable()
    assert base_name("claude-opus-5-5-20260924") == "claude-opus-5-5"
    assert base_name("claude-sonnet-5-5[1m]") == "claude-sonnet-5-5"
    assert table.price("claude-opus-5-5-20260924") == DEFAULT_PRICES["claude-opus-5-5"]
    assert (
        table.cost(
            "claude-next-7",
            input_tokens=10,
            output_tokens=10,
            cache_read=0,
            cache_write_5m=0,
            cache_write_1h=0,
        )
        is None
    )


def test_configured_prices_override_the_defaults() -> None:
    own = ModelPrice(input=1, output=2, cache_write_5m=0, cache_write_1h=0, cache_read=0)
    table = PriceTable({"claude-sonnet-5-5": own, "claude-next-7": own})
    assert table.cost(
        "claude-next-7",
        input_tokens=10**6,
        output_tokens=10**6,
        cache_read=0,
        cache_write_5m=0,
        cache_write_1h=0,
    ) == pytest.approx(3.0)
    assert table.price("claude-sonnet-5-5") == own
    assert table.price("claude-opus-5-5") == DEFAULT_PRICES["claude-opus-5-5"]


def test_a_long_haiku_prompt_pays_the_long_prompt_rate_on_every_token() -> None:
    table = PriceTable()
    short = table.cost(
        "claude-haiku-5-5",
        input_tokens=100_000,
        output_tokens=1_000_000,
        cache_read=0,
        cache_write_5m=0,
        cache_write_1h=0,
    )
    long = table.cost(
        "claude-haiku-5-5",
        input_tokens=100_001,
        output_tokens=1_000_000,
        cache_read=0,
        cache_write_5m=0,
        cache_write_1h=0,
    )
    assert short == pytest.approx(0.01 + 0.50)
    assert long == pytest.approx(100_001 * 0.50 / 1e6 + 2.50)


def test_model_settings_follow_what_each_model_accepts() -> None:
    assert supports_effort("claude-sonnet-5-5") and supports_adaptive_thinking("claude-sonnet-5-5")
    assert supports_effort("claude-opus-4-5-20251101")
    assert not supports_adaptive_thinking("claude-opus-4-5")  # manual thinking only
    assert not supports_effort("claude-haiku-4-5") and is_known("claude-haiku-4-5")
    assert not is_known("claude-next-7")

    assert Claude.options("claude-sonnet-5-5", "") == {"thinking": {"type": "adaptive"}}
    assert Claude.options("claude-opus-5-5", "xhigh") == {
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "xhigh"},
    }
    # A model the worker does not know gets what was asked for, and nothing more.
    assert Claude.options("claude-next-7", "low") == {"output_config": {"effort": "low"}}
    assert Claude.options("claude-next-7", "") == {}
    assert Claude.options("claude-haiku-4-5", "low") == {}


def test_the_meter_sums_calls_and_prices_them() -> None:
    changes: list[int] = []
    meter = UsageMeter(on_change=lambda: changes.append(1))
    meter.start_call()
    first = meter.record(
        "claude-sonnet-5-5",
        input_tokens=1000,
        output_tokens=500,
        cache_read=10_000,
        cache_write_5m=2000,
    )
    meter.start_call()  # a call that failed before any answer still counts
    assert first.model_dump(exclude={"cost_usd"}) == TokenUsage(
        input_tokens=1000,
        output_tokens=500,
        cache_read_input_tokens=10_000,
        cache_creation_input_tokens=2000,
    ).model_dump(exclude={"cost_usd"})
    assert first.cost_usd == pytest.approx((1000 * 2 + 500 * 10 + 10_000 * 0.1 + 2000 * 2.5) / 1e6)
    assert meter.total.calls == 2 and meter.total.total_tokens == 13_500
    assert len(changes) == 3


def test_an_unpriced_model_costs_zero_and_is_remembered() -> None:
    meter = UsageMeter()
    meter.record("claude-next-7", input_tokens=10, output_tokens=10)
    assert meter.total.cost_usd == 0.0 and meter.unpriced == {"claude-next-7"}


def test_budgets_fail_with_the_spend_so_far() -> None:
    meter = UsageMeter(budget=Budget(max_tokens=1000))
    meter.check_budget("before turn 1")  # nothing spent yet
    meter.start_call()
    meter.record("claude-sonnet-5-5", input_tokens=900, output_tokens=100)
    with pytest.raises(StepFailed) as caught:
        meter.check_budget("before turn 2")
    failure = caught.value
    assert (failure.kind, failure.reason) == (FailureKind.BUDGET_EXCEEDED, "budget_tokens")
    assert failure.message == (
        "the step's token budget is spent before turn 2: 1000 of 1000 tokens used "
        "($0.0028, 1 calls)"
    )
    assert failure.usage == meter.total

    dollars = UsageMeter(budget=Budget(max_usd=0.001))
    dollars.record("claude-opus-5-5", input_tokens=100, output_tokens=100)
    with pytest.raises(StepFailed) as spent:
        dollars.check_budget("before call 2")
    assert spent.value.reason == "budget_usd"
    assert "$0.0024 of $0.0010 used" in spent.value.message


def test_an_unlimited_budget_never_fails() -> None:
    meter = UsageMeter(budget=Budget())
    meter.record("claude-opus-5-5", input_tokens=10**9, output_tokens=10**9)
    meter.check_budget("before turn 99")
    assert Budget().unlimited and not Budget(max_usd=1).unlimited

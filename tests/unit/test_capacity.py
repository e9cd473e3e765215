"""Model capacity arithmetic: the sliding window of grants, the API's reports, limits."""

import pytest

from scheduler.capacity import (
    Demand,
    Limits,
    ModelWindow,
    RateLimitReport,
    estimate_demand,
    limits_for,
    parse_limits,
)

T0 = 1_000_000.0


def _window(rpm: float = 60, input_tpm: float = 6000, output_tpm: float = 600) -> ModelWindow:
    return ModelWindow("m", Limits(rpm, input_tpm, output_tpm), window=60.0)


def test_a_window_admits_up_to_its_limit_then_waits_for_the_oldest_grant_to_age_out() -> None:
    account = _window(rpm=60)
    call = Demand(1, 10, 10)
    for i in range(60):
        assert account.wait_for(call, T0 + i * 0.1) == (0.0, "")
        account.take(call, T0 + i * 0.1)
    wait, why = account.wait_for(call, T0 + 6)
    assert wait == pytest.approx(54.0)  # the first grant leaves the window at T0 + 60
    assert why == "m requests per minute (60)"
    assert account.wait_for(call, T0 + 60.0)[0] == 0.0


def test_no_window_of_a_minute_ever_holds_more_than_the_limit() -> None:
    # Greedy callers against a 10 per minute limit for five minutes: count every window.
    account = _window(rpm=10)
    granted: list[float] = []
    now = T0
    while now < T0 + 300:
        wait, _ = account.wait_for(Demand(1, 0, 0), now)
        if wait == 0:
            account.take(Demand(1, 0, 0), now)
            granted.append(now)
        else:
            now += wait
    for start in granted:
        assert sum(1 for t in granted if start <= t < start + 60) <= 10
    assert len(granted) == pytest.approx(50, abs=1)  # and the limit is used in full


def test_a_lease_counts_until_its_last_possible_use_plus_a_window() -> None:
    account = _window(rpm=10)
    account.take(Demand(10, 0, 0), T0, until=T0 + 5)
    assert account.wait_for(Demand(1, 0, 0), T0 + 62)[0] == pytest.approx(3.0)


def test_the_tightest_dimension_decides() -> None:
    account = _window(rpm=1000, input_tpm=6000, output_tpm=600)
    account.take(Demand(1, 100, 600), T0)  # output used up for a minute
    wait, why = account.wait_for(Demand(1, 100, 300), T0 + 30)
    assert wait == pytest.approx(30.0)
    assert why == "m output tokens per minute (600)"


def test_settling_replaces_the_estimate_with_what_was_used() -> None:
    account = _window(output_tpm=600)
    grant = account.take(Demand(1, 0, 500), T0)
    assert account.wait_for(Demand(1, 0, 200), T0)[0] > 0
    account.settle(grant, Demand(1, 0, 100), T0)
    assert account.wait_for(Demand(1, 0, 200), T0)[0] == 0.0
    # A call in flight counts until a window after it ends.
    flight = account.take(Demand(1, 0, 550), T0, until=float("inf"))
    assert account.wait_for(Demand(1, 0, 100), T0 + 500)[0] == 60.0  # look again later
    account.settle(flight, Demand(1, 0, 550), T0 + 500)
    assert account.wait_for(Demand(1, 0, 100), T0 + 530)[0] == pytest.approx(30.0)


def test_a_demand_bigger_than_a_minute_goes_when_the_window_is_empty() -> None:
    account = _window(input_tpm=1000)
    assert account.wait_for(Demand(1, 50_000, 0), T0)[0] == 0.0
    account.take(Demand(1, 50_000, 0), T0)
    assert account.wait_for(Demand(1, 50_000, 0), T0 + 1)[0] == pytest.approx(59.0)


def test_the_api_s_report_wins_where_it_says_less_is_left_and_a_429_pauses() -> None:
    account = _window(rpm=50)
    extra = account.observe(
        RateLimitReport(requests_limit=40, requests_remaining=3, resets=(T0 + 90, None, None)),
        T0,
    )
    assert account.limit(account_dimension := list(account.api_limits)[0]) == 40
    assert account_dimension.value == "requests"
    assert extra is not None and extra.amount.requests == 37  # 40 allowed, 3 left
    assert account.left(T0).requests == 3
    assert account.wait_for(Demand(4, 0, 0), T0)[0] == pytest.approx(90.0)  # the API's reset
    # A higher limit from the API does not raise ours (we may be given a share).
    account.observe(RateLimitReport(requests_limit=4000), T0)
    assert account.limit(account_dimension) == 40
    account.observe(RateLimitReport(retry_after=12), T0)
    wait, why = account.wait_for(Demand(0, 0, 0), T0)
    assert wait == pytest.approx(12) and "429" in why


def test_estimates_count_bytes_as_quarter_tokens() -> None:
    assert estimate_demand(4001, 2048) == Demand(1, 1001, 2048)


def test_limits_parse_strictly_and_default_to_the_documented_tier() -> None:
    assert parse_limits('{"*": {"rpm": 100}}') == {"*": Limits(rpm=100)}
    for bad in (
        "[1]",
        '{"m": 5}',
        '{"m": {"rps": 1}}',
        '{"m": {"rpm": -1}}',
        '{"m": {"rpm": true}}',
    ):
        with pytest.raises(ValueError):
            parse_limits(bad)
    configured = parse_limits('{"a": {"rpm": 5}, "*": {"rpm": 7}}')
    assert limits_for(configured, "a").rpm == 5
    assert limits_for(configured, "b").rpm == 7
    assert limits_for({}, "b") == Limits()
    assert Limits().rpm == 4000  # Tier 4, Claude Sonnet


def test_each_api_key_has_its_own_account_and_limits() -> None:
    from scheduler.capacity import account_name, parse_api_keys

    assert parse_api_keys(" backend_developer=team-b , *=team-a ") == {
        "backend_developer": "team-b",
        "*": "team-a",
    }
    for bad in ("backend_developer", "=x", "a=", "a=has/slash", "a=" + "x" * 65):
        with pytest.raises(ValueError):
            parse_api_keys(bad)
    assert account_name("", "claude-sonnet-5-5") == "claude-sonnet-5-5"
    assert account_name("team-b", "claude-sonnet-5-5") == "team-b/claude-sonnet-5-5"
    configured = parse_limits(
        '{"team-b/claude-sonnet-5-5": {"rpm": 5}, "team-b/*": {"rpm": 7},'
        ' "claude-sonnet-5-5": {"rpm": 9}, "*": {"rpm": 11}}'
    )
    assert limits_for(configured, "team-b/claude-sonnet-5-5").rpm == 5
    assert limits_for(configured, "team-b/claude-haiku-4-5").rpm == 7
    assert limits_for(configured, "team-c/claude-sonnet-5-5").rpm == 9  # the model's
    assert limits_for(configured, "team-c/claude-haiku-4-5").rpm == 11
    assert limits_for(configured, "claude-sonnet-5-5").rpm == 9


async def test_a_pool_calls_with_its_own_key_or_the_default_pool_s() -> None:
    from scheduler.worker_client import WorkerPools

    pools = WorkerPools(
        {"*": "127.0.0.1:1", "backend_developer": "127.0.0.1:2", "qa_engineer": "127.0.0.1:3"},
        heartbeat_timeout=1,
        api_keys={"backend_developer": "team-b", "*": "team-a"},
    )
    assert pools.api_key_of("backend_developer") == "team-b"
    assert pools.api_key_of("requirements_analyst") == "team-a"  # the default pool
    assert pools.api_key_of("qa_engineer") == "team-a"  # its pool names no key of its own
    await pools.close()
    one_key = WorkerPools({"*": "127.0.0.1:1"}, heartbeat_timeout=1)
    assert one_key.api_key_of("x") == ""
    await one_key.close()

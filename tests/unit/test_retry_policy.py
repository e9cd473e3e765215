"""The one error policy: the platform's faults never consume attempts; deadlines bound all."""

from datetime import timedelta

from maestro.workflow import RetryPolicy
from scheduler.retry import (
    MAX_RETRY_AFTER_SECONDS,
    Failure,
    FailureKind,
    backoff_seconds,
    decide,
)

POLICY = RetryPolicy(
    max_attempts=2, initial_backoff=timedelta(seconds=1), max_backoff=timedelta(seconds=3)
)


def _decide(
    kind: FailureKind,
    *,
    attempt: int = 1,
    dispatch: int = 1,
    left: float = 3600,
    retry_after: float | None = None,
):
    return decide(
        Failure(kind, "boom", retry_after),
        attempt=attempt,
        dispatch=dispatch,
        policy=POLICY,
        seconds_to_deadline=left,
        platform_backoff=(0.5, 10.0),
        overload_backoff=(20.0, 120.0),
    )


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    for failures, ceiling in ((1, 1.0), (2, 2.0), (3, 3.0), (4, 3.0)):
        delays = [backoff_seconds(1.0, 3.0, failures) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_platform_faults_are_retried_without_consuming_attempts_past_max_attempts() -> None:
    # The last attempt, sent for the twentieth time: still retried, still attempt 2.
    decision = _decide(FailureKind.PLATFORM, attempt=2, dispatch=20)
    assert decision.retry_in is not None and decision.retry_in <= 10.0
    assert not decision.consumes_attempt


def test_work_failures_consume_attempts_until_none_are_left() -> None:
    first = _decide(FailureKind.RETRYABLE, attempt=1)
    assert first.consumes_attempt and first.retry_in is not None and first.retry_in <= 1.0
    last = _decide(FailureKind.RETRYABLE, attempt=2)
    assert last.retry_in is None
    assert "attempt 2 of 2" in last.reason


def test_fatal_failures_are_not_retried() -> None:
    assert _decide(FailureKind.FATAL).retry_in is None


def test_an_overloaded_model_gets_a_long_backoff() -> None:
    decision = _decide(FailureKind.OVERLOADED, attempt=1)
    assert decision.retry_in is not None
    assert decision.retry_in >= 10.0


def test_retry_after_is_honoured_within_a_cap() -> None:
    assert _decide(FailureKind.RATE_LIMITED, retry_after=7.0).retry_in == 7.0
    capped = _decide(FailureKind.PLATFORM, retry_after=86_400.0, left=10**6)
    assert capped.retry_in == MAX_RETRY_AFTER_SECONDS


def test_nothing_is_retried_past_the_step_deadline() -> None:
    for kind in (FailureKind.PLATFORM, FailureKind.RETRYABLE):
        decision = _decide(kind, left=0.1)
        assert decision.retry_in is None
        assert "deadline" in decision.reason

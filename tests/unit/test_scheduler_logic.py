"""The scheduler's pure pieces: context budget, backoff, result path checks."""

from datetime import timedelta

import pytest

from maestro.core.errors import Internal
from maestro.store import StepOutputRecord
from maestro.workflow import RetryPolicy
from scheduler.context import choose_context
from scheduler.models import AttemptResult
from scheduler.run_loop import (
    MAX_RETRY_AFTER_SECONDS,
    backoff_seconds,
    retry_delay,
    validated_files,
)


def _output(step_id: str, *files: tuple[str, int]) -> StepOutputRecord:
    return StepOutputRecord(
        step_id=step_id,
        persona="backend_developer",
        summary=f"{step_id} summary",
        files=tuple((path, b"x" * size) for path, size in files),
    )


def test_context_keeps_nearest_files_within_the_budget_and_names_the_rest() -> None:
    chosen = choose_context(
        [_output("backend", ("app/a.py", 600), ("app/b.py", 300)), _output("arch", ("d.md", 200))],
        budget_bytes=1000,
    )
    assert [d.step_id for d in chosen] == ["backend", "arch"]
    assert [p for p, _ in chosen[0].files] == ["app/a.py", "app/b.py"]
    assert chosen[1].files == ()
    assert chosen[1].omitted_paths == ("d.md",)
    # Summaries always travel, even when no file fits.
    assert chosen[1].summary == "arch summary"
    assert sum(len(c) for d in chosen for _, c in d.files) <= 1000


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(
        max_attempts=5, initial_backoff=timedelta(seconds=1), max_backoff=timedelta(seconds=3)
    )
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 3.0), (4, 3.0)):
        delays = [backoff_seconds(policy, attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


def _result(*paths: str) -> AttemptResult:
    return AttemptResult(
        summary="s",
        files=tuple((p, b"x") for p in paths),
        provider="offline",
        model="offline",
        input_tokens=0,
        output_tokens=0,
    )


def test_worker_results_are_normalised_and_unsafe_paths_fail_the_attempt() -> None:
    assert validated_files(_result("./app//x.py")).files == (("app/x.py", b"x"),)
    with pytest.raises(Internal, match="absolute"):
        validated_files(_result("/etc/passwd"))
    with pytest.raises(Internal, match="twice"):
        validated_files(_result("a.py", "./a.py"))


def test_a_retry_waits_at_least_what_the_failing_service_asked_within_a_cap() -> None:
    policy = RetryPolicy(initial_backoff=timedelta(seconds=1), max_backoff=timedelta(seconds=2))
    assert 0.5 <= retry_delay(policy, 1, None) <= 1.0
    assert retry_delay(policy, 1, 7.0) == 7.0
    assert retry_delay(policy, 1, 86_400.0) == MAX_RETRY_AFTER_SECONDS

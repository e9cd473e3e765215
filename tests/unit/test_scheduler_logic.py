"""The scheduler's pure pieces: context budget, result path checks, worker pools."""

import pytest

from maestro.store.sql_reads import choose_files
from scheduler.models import AttemptResult
from scheduler.retry import FailureKind
from scheduler.run_loop import validated_files
from scheduler.worker_client import DispatchFailed, parse_pools


def test_context_keeps_nearest_files_within_the_budget() -> None:
    chosen = choose_files(
        [("backend", [("app/a.py", 600), ("app/b.py", 300)]), ("arch", [("d.md", 200)])],
        budget_bytes=1000,
    )
    # The nearest step's files first; what does not fit is left for the caller to name.
    assert chosen == {("backend", "app/a.py"), ("backend", "app/b.py")}


def test_context_takes_a_smaller_later_file_when_a_big_one_does_not_fit() -> None:
    chosen = choose_files([("a", [("big", 900), ("small", 50)]), ("b", [("c", 60)])], 100)
    assert chosen == {("a", "small")}


def _result(*paths: str) -> AttemptResult:
    return AttemptResult(
        summary="s", files=tuple((p, b"x") for p in paths), provider="offline", model="offline"
    )


def test_worker_results_are_normalised_and_unsafe_paths_fail_the_attempt() -> None:
    assert validated_files(_result("./app//x.py")).files == (("app/x.py", b"x"),)
    with pytest.raises(DispatchFailed, match="absolute") as bad:
        validated_files(_result("/etc/passwd"))
    # A bad result is the work's fault: it consumes an attempt and may be retried.
    assert bad.value.failure.kind is FailureKind.RETRYABLE
    with pytest.raises(DispatchFailed, match="twice"):
        validated_files(_result("a.py", "./a.py"))


def test_worker_pools_route_personas_and_need_a_default() -> None:
    pools = parse_pools("backend_developer=dns:///code:50051, *=dns:///docs:50051", "")
    assert pools == {"backend_developer": "dns:///code:50051", "*": "dns:///docs:50051"}
    assert parse_pools("", "127.0.0.1:1") == {"*": "127.0.0.1:1"}
    with pytest.raises(ValueError, match="no default"):
        parse_pools("qa_engineer=x:1", "")
    with pytest.raises(ValueError, match="PERSONA=ADDRESS"):
        parse_pools("qa_engineer", "x:1")

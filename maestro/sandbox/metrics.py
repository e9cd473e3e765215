"""THE registry of metric names: what each measures and which check measures it.

Workflow validation rejects a threshold on a name that is not here, and a gate whose
checks do not measure it; the sandbox measures exactly these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from maestro.sandbox.models import CheckName


@dataclass(frozen=True)
class Metric:
    """A measured quantity.

    Attributes:
        name: Its name in thresholds and reports.
        check: The check that measures it.
        description: What it counts, precisely.
        needs_coverage: Only measured when the run asks for coverage.
    """

    name: str
    check: CheckName
    description: str
    needs_coverage: bool = False


_ALL = (
    Metric(
        "tests_collected",
        CheckName.PYTEST,
        "tests pytest collected and reported (passed + failed + errors + skipped, "
        "without modules that failed to import)",
    ),
    Metric("tests_passed", CheckName.PYTEST, "tests that passed"),
    Metric("tests_failed", CheckName.PYTEST, "tests that failed in their body"),
    Metric(
        "tests_errors",
        CheckName.PYTEST,
        "errors outside a test body: modules that failed to import (collection errors) "
        "and failing set-up or tear-down",
    ),
    Metric("tests_skipped", CheckName.PYTEST, "tests skipped or expected to fail"),
    Metric(
        "coverage_percent",
        CheckName.PYTEST,
        "statement coverage, 0-100, of the workspace's Python files outside tests "
        "(tests/, test_*.py, *_test.py, conftest.py), files never imported included",
        needs_coverage=True,
    ),
    Metric("lint_errors", CheckName.RUFF, "ruff findings (syntax errors included)"),
    Metric("compile_errors", CheckName.COMPILE, "Python files that do not compile"),
)

METRICS: Mapping[str, Metric] = MappingProxyType({m.name: m for m in _ALL})
"""Every metric, by name."""


def get_metric(name: str) -> Metric | None:
    """Returns the metric registered under exactly this name, or None."""
    return METRICS.get(name)

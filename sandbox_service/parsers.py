"""Parsers of the tools' machine-readable output: pytest's JUnit XML, ruff's JSON,
coverage's JSON and compileall's error listing. Pure functions over bytes.

The output comes from tools that ran generated code, so it is untrusted: every parser
bounds what it keeps and raises ReportError (never anything else) on a malformed report.
"""

from __future__ import annotations

import json
import math
import re
import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from maestro.sandbox.models import CompileError, LintFinding, TestFailure

# pytest's JUnit report names a module that failed to import with this message.
COLLECTION_FAILURE = "collection failure"
_MISSING_MODULE = re.compile(r"No module named '([A-Za-z_][\w.]*)'")
_ERROR_LINE = re.compile(r"^E\s+(.*)$", re.MULTILINE)
_COMPILE_HEADER = re.compile(r"^\*\*\* Error compiling '(.+)'\.\.\.$")
_COMPILE_LINE = re.compile(r'^\s*File "[^"]*", line (\d+)')
_TOOLCHAIN_MODULES = frozenset(
    {"pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "pytest_cov"}
    | {"coverage", "ruff", "py"}
)


class ReportError(ValueError):
    """A tool's report is malformed or unreadable; the message says how."""


def trim(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marking the cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[: max(limit - 3, 0)].rstrip() + "..."


def tail(text: str, limit: int) -> str:
    """The last `limit` characters of `text`, marking the cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return "..." + text[-max(limit - 3, 0) :].lstrip()


@dataclass
class JunitSummary:
    """What pytest's JUnit report says.

    `collected` counts test cases without modules that failed to import; a test that
    failed and then errored in tear-down counts in both `failed` and `errors`, as
    pytest counts it.
    """

    collected: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[TestFailure] = field(default_factory=list)
    omitted: int = 0
    missing_modules: set[str] = field(default_factory=set)

    def metrics(self) -> dict[str, float]:
        return {
            "tests_collected": self.collected,
            "tests_passed": self.passed,
            "tests_failed": self.failed,
            "tests_errors": self.errors,
            "tests_skipped": self.skipped,
        }


def _failure_message(element: ElementTree.Element, limit: int) -> str:
    """The message attribute plus the `E ` lines and the location of the traceback."""
    lines = [ln.strip() for ln in (element.get("message") or "").splitlines() if ln.strip()]
    text = element.text or ""
    for match in _ERROR_LINE.finditer(text):
        detail = match.group(1).strip()
        if detail and detail not in lines and len(lines) < 8:
            lines.append(detail)
    last = next((ln.strip() for ln in reversed(text.strip().splitlines()) if ln.strip()), "")
    if last and last not in lines and re.match(r"^[\w./-]+:\d+", last):
        lines.append(last)
    if not lines:
        lines = [ln.strip() for ln in text.strip().splitlines()[-3:]]
    return trim(" | ".join(lines), limit)


def parse_junit(data: bytes, *, max_failures: int, message_chars: int) -> JunitSummary:
    """Counts pytest's outcomes and keeps the first failures with trimmed messages.

    Raises:
        ReportError: the XML is malformed or is not a JUnit report.
    """
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as err:
        raise ReportError(f"the JUnit report is not valid XML: {err}") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportError(f"the JUnit report's root is <{root.tag}>, not <testsuites>")
    summary = JunitSummary()
    for case in root.iter("testcase"):
        classname, name = case.get("classname") or "", case.get("name") or ""
        test = f"{classname}::{name}" if classname else name
        failure, error = case.find("failure"), case.find("error")
        texts = [e.text or "" for e in (failure, error) if e is not None]
        for text in texts:
            summary.missing_modules |= missing_modules(text)
        if error is not None and (error.get("message") or "") == COLLECTION_FAILURE:
            summary.errors += 1
            _keep(
                summary,
                TestFailure(
                    test=test, kind="error", message=_failure_message(error, message_chars)
                ),
                max_failures,
            )
            continue
        summary.collected += 1
        if failure is not None:
            summary.failed += 1
            _keep(
                summary,
                TestFailure(
                    test=test, kind="failed", message=_failure_message(failure, message_chars)
                ),
                max_failures,
            )
        if error is not None:
            summary.errors += 1
            _keep(
                summary,
                TestFailure(
                    test=test, kind="error", message=_failure_message(error, message_chars)
                ),
                max_failures,
            )
        if failure is None and error is None:
            if case.find("skipped") is not None:
                summary.skipped += 1
            else:
                summary.passed += 1
    return summary


def _keep(summary: JunitSummary, failure: TestFailure, limit: int) -> None:
    if len(summary.failures) < limit:
        summary.failures.append(failure)
    else:
        summary.omitted += 1


def missing_modules(text: str) -> set[str]:
    """Top-level names of modules an ImportError says are missing."""
    return {m.group(1).split(".")[0] for m in _MISSING_MODULE.finditer(text)}


def missing_dependencies(modules: Iterable[str], workspace_modules: set[str]) -> list[str]:
    """Missing modules that are neither the standard library, the toolchain nor the
    workspace's own (a missing module of the workspace is a bug, not a dependency)."""
    return sorted(
        name
        for name in set(modules)
        if name not in sys.stdlib_module_names
        and name not in _TOOLCHAIN_MODULES
        and name not in workspace_modules
    )


@dataclass
class LintSummary:
    """Ruff's findings: all counted by rule, the first ones kept."""

    findings: list[LintFinding]
    by_rule: dict[str, int]
    total: int
    omitted: int


def _relative(path: str, workspace: str) -> str:
    prefix = workspace.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def parse_ruff(
    data: bytes, *, workspace: str, max_findings: int, message_chars: int
) -> LintSummary:
    """Reads `ruff check --output-format json`.

    Raises:
        ReportError: the output is not the JSON list ruff writes.
    """
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"ruff's report is not JSON: {err}") from None
    if not isinstance(raw, list):
        raise ReportError("ruff's report is not a JSON list")
    counts: Counter[str] = Counter()
    findings: list[LintFinding] = []
    for item in raw:
        finding = _ruff_finding(item, workspace, message_chars)
        counts[finding.rule] += 1
        if len(findings) < max_findings:
            findings.append(finding)
    return LintSummary(
        findings=findings,
        by_rule=dict(sorted(counts.items())),
        total=len(raw),
        omitted=max(len(raw) - len(findings), 0),
    )


def _ruff_finding(item: Any, workspace: str, message_chars: int) -> LintFinding:
    if not isinstance(item, dict):
        raise ReportError("a ruff finding is not a JSON object")
    code = item.get("code")
    # Syntax errors have no rule code in some ruff versions and `invalid-syntax` in others.
    rule = code if isinstance(code, str) and code else "syntax-error"
    if rule == "invalid-syntax":
        rule = "syntax-error"
    location = item.get("location")
    row = location.get("row") if isinstance(location, dict) else None
    filename, message = item.get("filename"), item.get("message")
    if not isinstance(filename, str) or not isinstance(message, str):
        raise ReportError("a ruff finding lacks its filename or message")
    return LintFinding(
        rule=rule,
        path=_relative(filename, workspace),
        line=row if isinstance(row, int) and row > 0 else 0,
        message=trim(message, message_chars),
    )


def parse_compileall(
    output: str, *, max_errors: int, message_chars: int
) -> tuple[list[CompileError], int]:
    """Reads `python -m compileall -q` output: every file that did not compile.

    Returns:
        The first `max_errors` errors and the total count.
    """
    errors: list[CompileError] = []
    total = 0
    block: list[str] = []
    path = ""

    def close() -> None:
        nonlocal total
        if not path:
            return
        total += 1
        if len(errors) >= max_errors:
            return
        line = 0
        for text in block:
            match = _COMPILE_LINE.match(text)
            if match:
                line = int(match.group(1))
        message = next((t.strip() for t in reversed(block) if t.strip()), "does not compile")
        errors.append(CompileError(path=path, line=line, message=trim(message, message_chars)))

    for text in output.splitlines():
        header = _COMPILE_HEADER.match(text)
        if header:
            close()
            path = header.group(1).removeprefix("./")
            block = []
        elif path:
            block.append(text)
    close()
    return errors, total


def parse_coverage(data: bytes) -> float:
    """The total statement coverage, 0-100, from coverage.py's JSON report.

    Raises:
        ReportError: the report is malformed.
    """
    try:
        raw = json.loads(data)
        percent = raw["totals"]["percent_covered"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ReportError(f"the coverage report is malformed: {err}") from None
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise ReportError("the coverage report's percent_covered is not a number")
    if not math.isfinite(percent) or not 0 <= percent <= 100:
        raise ReportError(f"the coverage report's percent_covered is {percent}")
    return round(float(percent), 2)

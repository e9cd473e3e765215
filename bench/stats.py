"""Summary statistics and tables for the bench report (plain text and Markdown)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile: always one of the observed values, never interpolated.

    Args:
        values: The observations, in any order; must not be empty.
        q: The percentile, 0 < q <= 100.

    Returns:
        The smallest value with at least q% of the observations at or below it.
    """
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    """The distribution of one measurement, in seconds."""

    count: int
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        """Summarizes the values; an empty input gives a Summary with count 0."""
        data = list(values)
        if not data:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(data), percentile(data, 50), percentile(data, 95), max(data))


@dataclass(frozen=True)
class Spread:
    """The median of a few rounds and how far the rounds went either way."""

    count: int
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """Median (the mean of the middle two for an even count), min and max."""
        data = sorted(values)
        if not data:
            return cls(0, math.nan, math.nan, math.nan)
        middle = len(data) // 2
        median = data[middle] if len(data) % 2 else (data[middle - 1] + data[middle]) / 2
        return cls(len(data), median, data[0], data[-1])

    def scaled(self, factor: float) -> Spread:
        """The same spread in other units (e.g. seconds per run -> ms per step)."""
        return Spread(self.count, self.median * factor, self.low * factor, self.high * factor)

    def show(self, digits: int = 2) -> str:
        """`12.3 (11.9–13.0)`; `n/a` without data."""
        if self.count == 0:
            return "n/a"
        if self.count == 1:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}–{self.high:.{digits}f})"


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round-by-round ratios of two series measured in the same rounds.

    Raises:
        ValueError: the series differ in length, or a denominator is not positive.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} values paired with {len(denominators)}")
    if any(d <= 0 for d in denominators):
        raise ValueError("a denominator is zero or negative")
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


def ms(seconds: float) -> str:
    """Seconds as milliseconds with a precision that suits the magnitude."""
    if math.isnan(seconds):
        return "n/a"
    value = seconds * 1000
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def mib(kib: int) -> str:
    """KiB (as /proc reports them) as MiB with one decimal."""
    return f"{kib / 1024:.1f}"


@dataclass
class Table:
    """One measurement's results: a title, column headers, rows, and an optional note."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    note: str = ""

    def add(self, *cells: object) -> None:
        """Appends a row; each cell is shown with str()."""
        if len(cells) != len(self.headers):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.headers)} columns")
        self.rows.append(tuple(str(cell) for cell in cells))


def _is_number(cell: str) -> bool:
    """Whether a cell starts with a number (`12.5`, `29000 (50)`, `17.8 MiB`, `n/a`)."""
    head = cell.split(" ", 1)[0]
    if head == "n/a":
        return True
    try:
        float(head)
    except ValueError:
        return False
    return True


def _numeric_columns(table: Table) -> list[bool]:
    """Which columns hold numbers only (right-aligned) rather than labels (left)."""
    return [
        bool(table.rows) and all(_is_number(row[i]) for row in table.rows)
        for i in range(len(table.headers))
    ]


def render_text(table: Table) -> str:
    """The table as aligned plain text, for the terminal."""
    widths = [
        max([len(header), *(len(row[i]) for row in table.rows)])
        for i, header in enumerate(table.headers)
    ]
    numeric = _numeric_columns(table)
    lines = [table.title, "-" * len(table.title)]
    for row in (table.headers, *table.rows):
        cells = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    if table.note:
        lines.append(f"({table.note})")
    return "\n".join(lines)


def render_markdown(table: Table) -> str:
    """The table as a Markdown section."""
    lines = [f"### {table.title}", ""]
    lines.append("| " + " | ".join(table.headers) + " |")
    lines.append(
        "|" + "|".join("---:" if right else "---" for right in _numeric_columns(table)) + "|"
    )
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)

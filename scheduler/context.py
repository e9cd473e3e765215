"""Chooses the context a step is given: bounded, nearest dependencies first.

The old system fed every earlier output into every prompt, twice. Here a step gets
the summaries of all its ancestors and as many of their files as fit in a byte
budget, nearest ancestors first; what does not fit is named, not silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from maestro.store import StepOutputRecord
from scheduler.models import DependencyOutput


def choose_context(
    outputs: Sequence[StepOutputRecord], budget_bytes: int
) -> tuple[DependencyOutput, ...]:
    """Fits the ancestors' files into `budget_bytes`, in the order given.

    Args:
        outputs: the succeeded ancestors' outputs, nearest first.
        budget_bytes: the most file content to pass on, in bytes.
    """
    remaining = budget_bytes
    chosen = []
    for output in outputs:
        files: list[tuple[str, bytes]] = []
        omitted: list[str] = []
        for path, content in output.files:
            if len(content) <= remaining:
                files.append((path, content))
                remaining -= len(content)
            else:
                omitted.append(path)
        chosen.append(
            DependencyOutput(
                step_id=output.step_id,
                persona=output.persona,
                summary=output.summary,
                files=tuple(files),
                omitted_paths=tuple(omitted),
            )
        )
    return tuple(chosen)

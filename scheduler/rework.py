"""Bounded rework: what a new round re-runs and tells the steps it sends back. Pure.

A failing gate (or a blocking reviewer asking for changes) that declares `on_fail`
sends its report to the named upstream steps; those steps, every step between them
and the requester, and the requester itself run again as the next round. After
`max_rounds` rounds the step fails instead, naming itself, the round and what missed.
"""

from __future__ import annotations

from collections.abc import Mapping

from maestro.store import ReworkRequest
from maestro.text import truncate
from maestro.workflow import WorkflowSpec
from maestro.workflow.gate_spec import rework_policy, steps_to_rerun

# The previous summary quoted in feedback: enough to recall what was done.
MAX_PREVIOUS_SUMMARY_CHARS = 2000


def plan_rework(
    spec: WorkflowSpec,
    step_id: str,
    current_round: int,
    *,
    report: str,
    reason: str,
    previous_summaries: Mapping[str, str],
) -> ReworkRequest | None:
    """The next round `step_id` asks for, or None when its rounds are used up.

    Args:
        spec: The run's workflow.
        step_id: The gate or reviewer that failed.
        current_round: The round it failed in (0 for the first).
        report: What failed (the gate's report or the reviewer's findings), already
            trimmed to its budget.
        reason: One line for the event.
        previous_summaries: Step id -> its last summary, for the rework targets.
    """
    policy = rework_policy(spec.step(step_id))
    if policy is None or current_round >= policy.max_rounds:
        return None
    new_round = current_round + 1
    feedback = {
        target: feedback_text(
            step_id, new_round, policy.max_rounds, report, previous_summaries.get(target, "")
        )
        for target in policy.rework
    }
    return ReworkRequest(
        round=new_round,
        steps=tuple(steps_to_rerun(spec, step_id, policy.rework)),
        feedback=feedback,
        reason=reason,
    )


def feedback_text(
    requester: str, new_round: int, max_rounds: int, report: str, previous_summary: str
) -> str:
    """What a reworked step is told: who sent it back, what failed, what it did."""
    lines = [
        f"Step {requester!r} sent your work back (rework round {new_round} of {max_rounds}).",
        "Fix what it reports; keep what already works.",
        "",
        report.strip(),
    ]
    if previous_summary.strip():
        lines += [
            "",
            "# Your previous result",
            truncate(previous_summary.strip(), MAX_PREVIOUS_SUMMARY_CHARS),
        ]
    return "\n".join(lines) + "\n"


def exhausted_reason(kind: str, step_id: str, current_round: int, what_missed: str) -> str:
    """Why the step fails once no rounds are left: the step, the round, what missed."""
    rounds = "" if current_round == 0 else f" after {current_round} rework round"
    rounds += "s" if current_round > 1 else ""
    return f"{kind} {step_id!r} failed in round {current_round}{rounds}: {what_missed}"

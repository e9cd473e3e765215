"""Approval steps: the run waits for a person, durably, and goes on, reworks or stops
on their word.

The wait is the step's state (WAITING_APPROVAL) and due time in the store, so a
scheduler that restarts or takes the run over keeps waiting and times out on time. A
decision is a row any scheduler may write (the gateway reaches one of them); the
run's driver applies it under its lease, told at once when the decision came through
its own scheduler and otherwise at its next look (every `approval_poll_seconds`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from maestro.store import StepState
from scheduler import gates

if TYPE_CHECKING:
    from scheduler.run_loop import RunDriver, StepOutcome

# Paths named in APPROVAL_REQUESTED come from the run's artifacts upstream of the step.


async def ask(driver: RunDriver, step_id: str) -> StepOutcome:
    """The step's dependencies are done: it starts waiting (APPROVAL_REQUESTED)."""
    from scheduler.run_loop import Outcome, StepOutcome, persist

    spec = driver._spec
    step = spec.step(step_id)
    upstream = set(spec.ancestors(step_id))
    artifacts = driver._owners.written_by(upstream)
    due = await persist(
        "asking for a decision",
        driver._store.wait_for_approval,
        driver.lease,
        step_id,
        spec.timeout_for(step_id).total_seconds(),
        step.prompt,
        step.on_timeout,
        artifacts,
    )
    return StepOutcome(Outcome.WAITING_APPROVAL, due=due)


def waiting(driver: RunDriver, step_id: str, due: float | None) -> None:
    """Memory follows the store: the step waits until `due` (None: unchanged)."""
    driver._set_state(step_id, StepState.WAITING_APPROVAL)
    if due is not None:
        driver._approval_due[step_id] = due
    driver._checking.discard(step_id)
    poll = time.time() + driver._settings.approval_poll_seconds
    driver._check_at[step_id] = min(poll, driver._approval_due.get(step_id, poll))


def checks_due(driver: RunDriver, now: float) -> list[str]:
    """Waiting steps to look at now (a decision may be in, or the timeout passed)."""
    due = [
        step_id
        for step_id in driver._approval_due
        if step_id not in driver._checking and driver._check_at.get(step_id, 0.0) <= now
    ]
    driver._checking.update(due)
    return due


def next_check(driver: RunDriver, next_due: float | None) -> float | None:
    """The earlier of `next_due` and the next look at a waiting step."""
    for step_id, at in driver._check_at.items():
        if step_id in driver._approval_due and step_id not in driver._checking:
            next_due = at if next_due is None else min(next_due, at)
    return next_due


async def check(driver: RunDriver, step_id: str) -> StepOutcome:
    """Applies the step's decision (or its timeout's), if there is one yet."""
    from scheduler.run_loop import Outcome, StepOutcome, persist

    store, lease, spec = driver._store, driver.lease, driver._spec
    round_ = driver._round[step_id]
    decision = await persist(
        "reading a decision", store.get_decision, driver.run_id, step_id, round_
    )
    if decision is None:
        if time.time() < driver._approval_due[step_id]:
            return StepOutcome(Outcome.WAITING_APPROVAL)
        decision = await persist(
            "timing out an approval",
            store.decide_on_timeout,
            lease,
            step_id,
            round_,
            spec.step(step_id).on_timeout,
        )
    driver._approval_due.pop(step_id, None)
    driver._check_at.pop(step_id, None)
    who = decision.decided_by or "someone"
    rework = None
    failure = ""
    if decision.decision != "approve":
        reason = f"rejected by {who}: {decision.comment}"
        report = f"# Rejected by {who}\n\n{decision.comment}"
        rework = await gates._plan(driver, step_id, round_, report, reason)
        if rework is None:
            failure = (
                f"approval {step_id!r} rejected in round {round_} by {who}: {decision.comment}"
            )
    await persist(
        "applying a decision",
        store.settle_approval,
        lease,
        decision,
        rework,
        failure,
        spec.dependents(step_id),
    )
    if decision.decision == "approve":
        return StepOutcome(Outcome.SUCCEEDED)
    if rework is not None:
        return StepOutcome(Outcome.REWORK, rework.reason, rework=rework)
    return StepOutcome(Outcome.FAILED, failure)

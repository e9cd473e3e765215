"""Write transactions for gates and rework rounds (beside sql_writes, same rules).

A gate's verdict, the step's end and, when the gate sends work back, the new round of
every step it re-runs are one transaction: a scheduler that stops at any moment leaves
either the old round or the whole new one, and the next owner resumes from there.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from maestro.core.errors import NotFound
from maestro.store.db import Tx
from maestro.store.models import DispatchState, EventType, Lease, StepResultRecord, StepState
from maestro.store.sql_writes import (
    _end_dispatch,
    _fail_step,
    _running_dispatch,
    _RunWriter,
    _step,
    complete_step,
)


class ReworkRequest(BaseModel):
    """A new round: which steps run again, and what each is told.

    Attributes:
        round: The new round's number (1 for the first rework).
        steps: Every step that runs again, the requesting step included.
        feedback: Step id -> what its next attempt is told (the rework targets).
        reason: Why, for the REWORK_REQUESTED event.
    """

    model_config = ConfigDict(frozen=True)

    round: int
    steps: tuple[str, ...]
    feedback: dict[str, str]
    reason: str


class GateRecord(BaseModel):
    """A gate's evaluation, as the store records it.

    Attributes:
        passed: Whether every threshold held and every check ran.
        summary: One line for the step (the metrics, or what missed).
        result_json: The verdict, typed (shown by `maestro runs get`).
        attributes: GATE_EVALUATED's attributes (every metric, threshold, verdict).
        message: GATE_EVALUATED's line.
        rework: The round a failing gate starts; None when it does not.
        failure: Why the step fails when it neither passed nor reworks.
    """

    model_config = ConfigDict(frozen=True)

    passed: bool
    summary: str
    result_json: str
    attributes: dict[str, str]
    message: str
    rework: ReworkRequest | None = None
    failure: str = ""


def record_gate(
    tx: Tx,
    lease: Lease,
    step_id: str,
    attempt: int,
    dispatch: int,
    gate: GateRecord,
    block: Sequence[str],
) -> bool:
    """GATE_EVALUATED, then the step SUCCEEDED, a new round, or the step FAILED.

    Returns:
        False when this dispatch's outcome was already recorded.
    """
    run = _RunWriter(tx, lease)
    row = _running_dispatch(tx, lease.run_id, step_id, attempt, dispatch)
    if row is None:
        raise NotFound(f"attempt {attempt} of step {step_id!r} was never dispatched")
    if row["state"] != DispatchState.RUNNING.value:
        return False
    end = DispatchState.SUCCEEDED if gate.passed else DispatchState.FAILED
    _end_dispatch(tx, lease.run_id, step_id, attempt, dispatch, end, gate.failure)
    tx.execute(
        "UPDATE steps SET summary = ?, result_json = ?, provider = 'sandbox'"
        " WHERE run_id = ? AND step_id = ?",
        (gate.summary, gate.result_json, lease.run_id, step_id),
    )
    run.event(EventType.GATE_EVALUATED, gate.message, step_id, gate.attributes)
    if gate.passed:
        tx.execute(
            "UPDATE steps SET state = ?, end_time = ?, error = '' WHERE run_id = ? AND step_id = ?",
            (StepState.SUCCEEDED.value, tx.now, lease.run_id, step_id),
        )
        run.event(
            EventType.STEP_SUCCEEDED,
            f"{step_id} succeeded: {gate.summary}",
            step_id,
            {"attempt": str(attempt), "dispatch": str(dispatch), "provider": "sandbox"},
        )
    elif gate.rework is not None:
        _new_round(run, step_id, gate.rework)
    else:
        attributes = {"attempt": str(attempt), "dispatch": str(dispatch), "reason": gate.failure}
        _fail_step(run, step_id, gate.failure, attributes, block)
    run.close()
    return True


def complete_and_rework(
    tx: Tx,
    lease: Lease,
    step_id: str,
    attempt: int,
    dispatch: int,
    result: StepResultRecord,
    notes: Sequence[tuple[str, str]],
    rework: ReworkRequest | None,
    failure: str,
    block: Sequence[str],
) -> bool:
    """A reviewer's result that asks for changes: recorded as its result, then a new
    round (`rework`), or, with no rounds left, the step FAILS with `failure`.

    Returns:
        False when this dispatch's outcome was already recorded.
    """
    if not complete_step(tx, lease, step_id, attempt, dispatch, result, notes):
        return False
    run = _RunWriter(tx, lease)
    if rework is not None:
        _new_round(run, step_id, rework)
    else:
        _fail_step(run, step_id, failure, {"reason": failure}, block)
    run.close()
    return True


def _new_round(run: _RunWriter, by_step: str, rework: ReworkRequest) -> None:
    tx = run.tx
    for step_id in rework.steps:
        step = _step(tx, run.run_id, step_id)
        # Start time and due time go: the step's deadline counts from its new start.
        tx.execute(
            "UPDATE steps SET state = ?, round = ?, feedback = ?, attempts_before_round = ?,"
            " error = '', start_time = NULL, end_time = NULL, due_time = NULL"
            " WHERE run_id = ? AND step_id = ?",
            (
                StepState.PENDING.value,
                rework.round,
                rework.feedback.get(step_id, ""),
                int(step["attempts"]),
                run.run_id,
                step_id,
            ),
        )
    steps = ", ".join(rework.steps)
    run.event(
        EventType.REWORK_REQUESTED,
        f"rework round {rework.round}: {steps} run again: {rework.reason}",
        by_step,
        {"round": str(rework.round), "steps": ",".join(rework.steps), "reason": rework.reason},
    )

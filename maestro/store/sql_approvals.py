"""Write transactions for approval steps (beside sql_writes, same rules).

A person's decision is a row of `decisions` (one per step and round), written by
whichever scheduler the gateway reached; the scheduler that drives the run applies it
under its lease (the step's end, or a new round) and announces it. The wait itself is
the step's `due_time`: a durable timer a restarted or new owner keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from maestro.core.errors import FailedPrecondition, NotFound
from maestro.store.db import Row, Tx
from maestro.store.models import EventType, Lease, StepState
from maestro.store.sql_reads import to_datetime
from maestro.store.sql_rounds import ReworkRequest, _new_round
from maestro.store.sql_writes import _fail_step, _RunWriter, _step

APPROVE = "approve"
REJECT = "reject"
# Artifacts named in APPROVAL_REQUESTED; the rest are counted.
MAX_NAMED_ARTIFACTS = 50


class DecisionRecord(BaseModel):
    """A decision on an approval step in one round."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    step_id: str
    round: int
    decision: str
    comment: str
    decided_by: str
    request_id: str
    time: datetime


def _decision(row: Row) -> DecisionRecord:
    time = to_datetime(row["time"])
    assert time is not None
    return DecisionRecord(
        run_id=row["run_id"],
        step_id=row["step_id"],
        round=row["round"],
        decision=row["decision"],
        comment=row["comment"],
        decided_by=row["decided_by"],
        request_id=row["request_id"],
        time=time,
    )


def wait_for_approval(
    tx: Tx,
    lease: Lease,
    step_id: str,
    timeout_seconds: float,
    prompt: str,
    on_timeout: str,
    artifacts: Sequence[str],
) -> float:
    """The step waits for a person until `timeout_seconds` from now (APPROVAL_REQUESTED).

    Returns:
        When the wait times out (seconds since the epoch).
    """
    run = _RunWriter(tx, lease)
    step = _step(tx, lease.run_id, step_id)
    due = tx.later(timeout_seconds)
    tx.execute(
        "UPDATE steps SET state = ?, due_time = ?, error = '', start_time = COALESCE(start_time, ?)"
        " WHERE run_id = ? AND step_id = ?",
        (StepState.WAITING_APPROVAL.value, due, tx.now, lease.run_id, step_id),
    )
    named = list(artifacts[:MAX_NAMED_ARTIFACTS])
    if len(artifacts) > len(named):
        named.append(f"(and {len(artifacts) - len(named)} more)")
    run.event(
        EventType.APPROVAL_REQUESTED,
        f"{step_id} waits for a decision" + (f": {prompt}" if prompt else ""),
        step_id,
        {
            "prompt": prompt,
            "artifacts": ", ".join(named),
            "round": str(step["round"]),
            "timeout_seconds": f"{timeout_seconds:g}",
            "on_timeout": on_timeout,
        },
    )
    run.close()
    return due / 1_000_000


def record_decision(
    tx: Tx,
    run_id: str,
    step_id: str,
    decision: str,
    comment: str,
    decided_by: str,
    request_id: str,
) -> DecisionRecord:
    """Records a person's decision on a waiting step, once.

    Raises:
        NotFound: no such run or step.
        FailedPrecondition: the run finished, or the step is not waiting (already
            decided, not yet asked, or not an approval step).
    """
    run = tx.one("SELECT state FROM runs WHERE run_id = ?" + tx.for_update, (run_id,))
    if run is None:
        raise NotFound(f"run runs/{run_id} does not exist")
    step = _step(tx, run_id, step_id)
    if request_id:
        again = tx.one(
            "SELECT * FROM decisions WHERE run_id = ? AND step_id = ? AND request_id = ?",
            (run_id, step_id, request_id),
        )
        if again is not None:
            if again["decision"] != decision:
                raise FailedPrecondition(
                    f"request_id {request_id!r} already recorded a {again['decision']} decision"
                )
            return _decision(again)
    existing = tx.one(
        "SELECT * FROM decisions WHERE run_id = ? AND step_id = ? AND round = ?",
        (run_id, step_id, step["round"]),
    )
    if existing is not None:
        who = existing["decided_by"] or "someone"
        raise FailedPrecondition(
            f"step {step_id!r} of run runs/{run_id} was already decided: "
            f"{existing['decision']} by {who}"
        )
    if step["state"] != StepState.WAITING_APPROVAL.value:
        raise FailedPrecondition(
            f"step {step_id!r} of run runs/{run_id} is not waiting for a decision "
            f"(it is {step['state']})"
        )
    tx.execute(
        "INSERT INTO decisions (run_id, step_id, round, decision, comment, decided_by,"
        " request_id, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, step_id, step["round"], decision, comment, decided_by, request_id, tx.now),
    )
    row = tx.one(
        "SELECT * FROM decisions WHERE run_id = ? AND step_id = ? AND round = ?",
        (run_id, step_id, step["round"]),
    )
    return _decision(row)


def get_decision(tx: Tx, run_id: str, step_id: str, round_: int) -> DecisionRecord | None:
    row = tx.one(
        "SELECT * FROM decisions WHERE run_id = ? AND step_id = ? AND round = ?",
        (run_id, step_id, round_),
    )
    return None if row is None else _decision(row)


def decide_on_timeout(
    tx: Tx, lease: Lease, step_id: str, round_: int, decision: str
) -> DecisionRecord:
    """The wait timed out: `on_timeout` decides, unless a person did first."""
    _RunWriter(tx, lease).close()  # fencing: only the run's owner times it out
    existing = get_decision(tx, lease.run_id, step_id, round_)
    if existing is not None:
        return existing
    tx.execute(
        "INSERT INTO decisions (run_id, step_id, round, decision, comment, decided_by,"
        " request_id, time) VALUES (?, ?, ?, ?, ?, ?, '', ?)",
        (
            lease.run_id,
            step_id,
            round_,
            decision,
            f"no decision before the timeout (on_timeout: {decision})",
            "timeout",
            tx.now,
        ),
    )
    found = get_decision(tx, lease.run_id, step_id, round_)
    assert found is not None
    return found


def settle_approval(
    tx: Tx,
    lease: Lease,
    decision: DecisionRecord,
    rework: ReworkRequest | None,
    failure: str,
    block: Sequence[str],
) -> bool:
    """Applies a decision: STEP_APPROVED and the step SUCCEEDED, or STEP_REJECTED and
    a new round (`rework`) or the step FAILED (`failure`).

    Returns:
        False when the step no longer waits (the decision was applied already).
    """
    run = _RunWriter(tx, lease)
    step_id = decision.step_id
    step = _step(tx, lease.run_id, step_id)
    if step["state"] != StepState.WAITING_APPROVAL.value or step["round"] != decision.round:
        return False
    approved = decision.decision == APPROVE
    who = decision.decided_by or "someone"
    said = f": {decision.comment}" if decision.comment else ""
    attributes = {
        "decision": decision.decision,
        "decided_by": decision.decided_by,
        "comment": decision.comment,
        "round": str(decision.round),
    }
    run.event(
        EventType.STEP_APPROVED if approved else EventType.STEP_REJECTED,
        f"{step_id} {'approved' if approved else 'rejected'} by {who}{said}",
        step_id,
        attributes,
    )
    if approved:
        tx.execute(
            "UPDATE steps SET state = ?, summary = ?, end_time = ?, due_time = NULL, error = ''"
            " WHERE run_id = ? AND step_id = ?",
            (
                StepState.SUCCEEDED.value,
                f"approved by {who}{said}",
                tx.now,
                lease.run_id,
                step_id,
            ),
        )
        run.event(EventType.STEP_SUCCEEDED, f"{step_id} succeeded: approved by {who}", step_id)
    elif rework is not None:
        _new_round(run, step_id, rework)
    else:
        _fail_step(run, step_id, failure, {"reason": failure}, block)
    run.close()
    return True

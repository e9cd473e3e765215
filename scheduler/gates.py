"""Steps that judge work: gate steps (checks in the sandbox against thresholds) and
blocking reviewers that send work back.

A gate's workspace is the latest artifacts of every step it depends on, directly or
not. The sandbox unreachable is the platform's fault: retried within the step's
deadline, never consuming attempts. A check that crashed, a metric not measured, a
sandbox that cannot isolate: the gate fails (never passes) with the reason.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from maestro.core.errors import DeadlineExceeded, MaestroError, Unavailable
from maestro.sandbox.client import SandboxClient
from maestro.sandbox.gate import GateVerdict, evaluate, render_failure_report, sandbox_failed
from maestro.sandbox.models import CheckReport, CheckRequest, SandboxFile
from maestro.store import GateRecord, ReworkRequest, StepResultRecord
from maestro.workflow import StepSpec
from maestro.workflow.gate_spec import rework_policy
from scheduler.retry import Failure, FailureKind
from scheduler.rework import exhausted_reason, plan_rework
from scheduler.worker_client import DispatchFailed

if TYPE_CHECKING:
    from scheduler.run_loop import RunDriver, StepOutcome

log = logging.getLogger(__name__)

_sandboxes: dict[str, SandboxClient] = {}


def sandbox_client(address: str, heartbeat_timeout: float) -> SandboxClient:
    """One channel per sandbox address for the whole scheduler."""
    client = _sandboxes.get(address)
    if client is None:
        client = _sandboxes[address] = SandboxClient(address, heartbeat_timeout=heartbeat_timeout)
    return client


async def close_sandboxes() -> None:
    """Closes the sandbox channels (at shutdown)."""
    clients = list(_sandboxes.values())
    _sandboxes.clear()
    for client in clients:
        await client.close()


def gate_attributes(verdict: GateVerdict, round_: int) -> dict[str, str]:
    """GATE_EVALUATED's attributes: the verdict, and every metric with its threshold."""
    attributes = {
        "passed": "true" if verdict.passed else "false",
        "round": str(round_),
        "isolation": verdict.isolation.value if verdict.isolation else "none (sandbox failed)",
        "problems": "; ".join(verdict.problems),
    }
    for metric in verdict.metrics:
        value = "missing" if metric.value is None else f"{metric.value:g}"
        attributes[f"metric.{metric.metric}"] = value
        attributes[f"threshold.{metric.metric}"] = metric.threshold.describe()
        attributes[f"verdict.{metric.metric}"] = "pass" if metric.passed else "fail"
    return attributes


def what_missed(verdict: GateVerdict) -> str:
    """The problems and the metrics that missed, in one line."""
    return "; ".join([*verdict.problems, *(m.reason for m in verdict.metrics if not m.passed)])


async def run_gate_step(driver: RunDriver, step_id: str) -> StepOutcome:
    """Runs one attempt of a gate step and records its verdict."""
    from scheduler.run_loop import Outcome, StepOutcome, persist

    store, lease, spec = driver._store, driver.lease, driver._spec
    step = spec.step(step_id)
    attempt, dispatch = await persist(
        "starting a gate", store.start_dispatch, lease, step_id, "sandbox"
    )
    driver._last_attempt[step_id] = attempt
    now = time.time()
    first = driver._first_start[step_id] or now
    driver._first_start[step_id] = first
    deadline = first + spec.deadline_for(step_id).total_seconds()
    timeout = min(spec.timeout_for(step_id).total_seconds(), deadline - now)
    try:
        verdict, report = await _evaluate(driver, step, timeout)
    except DispatchFailed as failed:
        return await driver._after_failure(
            step_id, attempt, dispatch, failed.failure, None, deadline, []
        )
    round_ = driver._round[step_id]
    rework: ReworkRequest | None = None
    failure = ""
    if not verdict.passed:
        missed = what_missed(verdict)
        text = render_failure_report(
            verdict, report, budget_bytes=driver._settings.rework_feedback_bytes
        )
        rework = await _plan(driver, step_id, round_, text, missed)
        if rework is None:
            failure = exhausted_reason("gate", step_id, round_, missed)
    gate = GateRecord(
        passed=verdict.passed,
        summary=verdict.summary(),
        result_json=verdict.model_dump_json(),
        attributes=gate_attributes(verdict, round_),
        message=f"round {round_}: {verdict.summary()}",
        rework=rework,
        failure=failure,
    )
    await persist(
        "recording a gate",
        store.record_gate,
        lease,
        step_id,
        attempt,
        dispatch,
        gate,
        spec.dependents(step_id),
    )
    if verdict.passed:
        return StepOutcome(Outcome.SUCCEEDED)
    if rework is not None:
        return StepOutcome(Outcome.REWORK, rework.reason, rework=rework)
    return StepOutcome(Outcome.FAILED, failure)


async def _evaluate(
    driver: RunDriver, step: StepSpec, timeout: float
) -> tuple[GateVerdict, CheckReport | None]:
    """The verdict on the workspace as it stands, and the report it came from.

    Raises:
        DispatchFailed: the sandbox is unreachable or timed out (retried per policy).
    """
    from scheduler.run_loop import persist

    thresholds = step.thresholds
    address = driver._settings.sandbox_address
    if not address:
        reason = "this scheduler has no sandbox (set MAESTRO_SCHEDULER_SANDBOX_ADDRESS)"
        return sandbox_failed(thresholds, reason), None
    outputs = await persist(
        "reading a gate's workspace",
        driver._store.step_outputs,
        driver.run_id,
        driver._spec.ancestors(step.id),
    )
    files = {path: content for output in outputs for path, content in output.files}
    request = CheckRequest(
        files=tuple(SandboxFile(path=p, content=c) for p, c in sorted(files.items())),
        checks=step.checks,
        coverage=step.coverage,
        label=f"{driver.run_id}/{step.id}",
    )
    client = sandbox_client(address, driver._settings.heartbeat_timeout_seconds)
    try:
        report = await client.run_checks(request, timeout=max(timeout, 1.0))
    except Unavailable as err:
        raise DispatchFailed(
            Failure(FailureKind.PLATFORM, f"the sandbox is unavailable: {err.message}")
        ) from None
    except DeadlineExceeded as err:
        raise DispatchFailed(Failure(FailureKind.RETRYABLE, err.message)) from None
    except MaestroError as err:
        # It cannot isolate, or refused the request: the gate fails with the reason.
        log.warning("gate %s: the sandbox refused: %s", step.id, err.message)
        return sandbox_failed(thresholds, err.message), None
    return evaluate(thresholds, report), report


async def _plan(
    driver: RunDriver, step_id: str, round_: int, report: str, reason: str
) -> ReworkRequest | None:
    from scheduler.run_loop import persist

    policy = rework_policy(driver._spec.step(step_id))
    if policy is None:
        return None
    outputs = await persist(
        "reading what rework steps did",
        driver._store.step_outputs,
        driver.run_id,
        list(policy.rework),
    )
    return plan_rework(
        driver._spec,
        step_id,
        round_,
        report=report,
        reason=reason,
        previous_summaries={o.step_id: o.summary for o in outputs},
    )


async def review_sends_back(
    driver: RunDriver,
    step_id: str,
    attempt: int,
    dispatch: int,
    record: StepResultRecord,
    notes: list[tuple[str, str]],
    findings: str,
) -> StepOutcome:
    """A blocking reviewer asked for changes: its result is kept, then a new round
    (the findings are the feedback), or with no rounds left the step fails."""
    from scheduler.run_loop import Outcome, StepOutcome, persist

    round_ = driver._round[step_id]
    budget = driver._settings.rework_feedback_bytes
    report = findings.encode("utf-8")[:budget].decode("utf-8", "ignore") or record.summary
    reason = f"{step_id} requested changes"
    rework = await _plan(driver, step_id, round_, "# Review: changes requested\n" + report, reason)
    failure = "" if rework else exhausted_reason("review", step_id, round_, "changes requested")
    await persist(
        "recording a review",
        driver._store.complete_and_rework,
        driver.lease,
        step_id,
        attempt,
        dispatch,
        record,
        notes=notes,
        rework=rework,
        failure=failure,
        block=driver._spec.dependents(step_id),
    )
    driver._owners.note(step_id, (path for path, _ in record.files))
    if rework is not None:
        return StepOutcome(Outcome.REWORK, reason, rework=rework)
    return StepOutcome(Outcome.FAILED, failure)

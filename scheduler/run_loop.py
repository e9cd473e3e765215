"""Drives one run: dispatches each step the moment its dependencies succeeded.

There are no level barriers and no rescans: each step counts its dependencies still
to succeed, and a step whose count reaches zero is ready at once. Time is durable: a
step's backoff is a due time in the store, so a scheduler that restarts or takes the
run over waits out exactly what is left. Every write carries the run's lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar

from maestro.core.log_setup import run_id_var, step_id_var
from maestro.paths import BadPath, check_file_size, normalize_artifact_path
from maestro.personas import get_persona
from maestro.store import (
    NO_USAGE,
    Lease,
    ReworkRequest,
    RunRecord,
    RunState,
    StepContextRecord,
    StepResultRecord,
    StepState,
    Store,
    StoreUnavailable,
    Usage,
)
from maestro.workflow import Budget, StepKind, WorkflowSpec
from scheduler import approvals, gates
from scheduler.admission import Admission, AdmissionClosed
from scheduler.limiter import CapacityLimiter, CapacityWaitTimeout
from scheduler.models import (
    AttemptBudget,
    AttemptRequest,
    AttemptResult,
    CallRequest,
)
from scheduler.path_owners import PathOwners
from scheduler.retry import Decision, Failure, FailureKind, decide
from scheduler.settings import SchedulerSettings
from scheduler.step_capacity import StepCapacity
from scheduler.worker_client import DispatchFailed, WorkerPools

log = logging.getLogger(__name__)

T = TypeVar("T")

_PERSIST_MAX_WAIT = 2.0
# How long the run waits for its step tasks to stop once it cancelled them.
STOP_WAIT_SECONDS = 5.0
# Earlier steps a step's context is taken from, nearest first.
MAX_CONTEXT_STEPS = 16
# Progress notes wait this long to be written together (and with the step's end, when
# it comes first): users do not see the difference; the store sees far fewer writes.
PROGRESS_COALESCE_SECONDS = 0.1
# Failures after which a step's declared fallback is worth trying.
FALLBACK_KINDS = frozenset(
    {FailureKind.RETRYABLE, FailureKind.OVERLOADED, FailureKind.RATE_LIMITED}
)


async def persist(what: str, write: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Runs a store write, `write(*args, **kwargs)`, until it succeeds.

    A busy, locked or unreachable database is waited out with backoff, never turned
    into a failure of the run; anything else (a lost lease, a finished run) raises.
    """
    delay = 0.05
    while True:
        try:
            return await write(*args, **kwargs)
        except StoreUnavailable as err:
            log.warning("%s: %s; retrying in %.2fs", what, err.message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _PERSIST_MAX_WAIT)


def validated_files(result: AttemptResult) -> AttemptResult:
    """Re-checks a worker's paths: the store only ever holds confined paths.

    Raises:
        DispatchFailed: a bad path, a file too large, or a path twice (the work's fault).
    """
    files = []
    seen: set[str] = set()
    for path, content in result.files:
        try:
            clean = normalize_artifact_path(path)
            check_file_size(clean, len(content))
        except BadPath as err:
            raise DispatchFailed(
                Failure(FailureKind.RETRYABLE, f"the worker returned a bad file: {err}")
            ) from None
        if clean in seen:
            raise DispatchFailed(
                Failure(FailureKind.RETRYABLE, f"the worker returned {clean!r} twice")
            )
        seen.add(clean)
        files.append((clean, content))
    return replace(result, files=tuple(files))


def transcript_path(step_id: str) -> str:
    """Where a step's transcript is kept among the run's artifacts."""
    return f"transcripts/{step_id}.jsonl"


def with_transcript(result: AttemptResult, step_id: str) -> AttemptResult:
    """The result with the attempt's transcript (the agent loop's calls and tool uses,
    no file contents) as one more file, so it is kept and downloaded with the run.

    A step that wrote that path itself keeps its own file (the transcript is then only
    in the logs of the worker).
    """
    path = transcript_path(step_id)
    if not result.transcript or any(name == path for name, _ in result.files):
        return result
    return replace(result, files=(*result.files, (path, result.transcript)))


def result_json(result: AttemptResult) -> str:
    """The typed part of a result, as the store keeps it (a reviewer's verdict)."""
    if not result.verdict:
        return ""
    return json.dumps({"verdict": result.verdict, "findings": result.findings})


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Outcome(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    WAITING = "WAITING"
    """Back to PENDING: a retry is due later."""
    NOT_DISPATCHED = "NOT_DISPATCHED"
    """The scheduler is draining: the step was never sent."""
    REWORK = "REWORK"
    """A gate or reviewer sent work back: `rework` is the new round (scheduler/gates.py)."""
    WAITING_APPROVAL = "WAITING_APPROVAL"
    """An approval step waits for a person until `due` (scheduler/approvals.py)."""


@dataclass(frozen=True, slots=True)
class StepOutcome:
    outcome: Outcome
    error: str = ""
    due: float | None = None
    rework: ReworkRequest | None = None


class _Reports:
    """A dispatch's progress notes and usage, coalesced.

    A note is written a moment after it arrives, together with whatever arrives in that
    moment; while a write is in flight the next ones wait and go together. What is still
    pending when the dispatch ends goes into the transaction that records its end, so a
    quick step costs no progress write of its own.
    """

    def __init__(self, store: Store, lease: Lease, step_id: str, attempt: int, dispatch: int):
        self._store = store
        self._where = (lease, step_id, attempt, dispatch)
        self._notes: list[tuple[str, str]] = []
        self._usage: Usage | None = None
        self._written_usage: Usage | None = None
        self._task: asyncio.Task[None] | None = None
        self._writing = False
        self._settling = False
        self.last_usage: Usage | None = None

    def _dirty(self) -> bool:
        return bool(self._notes) or (self._usage is not None and self._usage != self._written_usage)

    async def __call__(self, note: str | None, provider: str, usage: Usage | None) -> None:
        if note is not None:
            self._notes.append((note, provider))
        if usage is not None:
            self._usage = self.last_usage = usage
        if self._dirty() and self._task is None:
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(PROGRESS_COALESCE_SECONDS)
            while self._dirty() and not self._settling:
                notes, self._notes = self._notes, []
                usage = self._usage
                self._writing = True
                try:
                    await persist(
                        "recording progress",
                        self._store.record_progress,
                        *self._where,
                        notes,
                        usage,
                    )
                finally:
                    self._writing = False
                self._written_usage = usage
        finally:
            self._task = None

    async def settle(self) -> list[tuple[str, str]]:
        """Stops writing on its own: lets a write in flight finish (re-raising its
        failure) and returns the notes still pending, for the dispatch's final
        transaction."""
        self._settling = True
        task = self._task
        if task is not None:
            if not self._writing:
                task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if _being_cancelled():
                    raise  # our caller is cancelled, not just the write we stopped
        notes, self._notes = self._notes, []
        return notes

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


class RunDriver:
    """One run's DAG walk, under this scheduler's lease.

    `drive()` runs until the run ends (and records how) or until it is stopped: a lost
    lease or a drain stops it without a final state, for the next owner to go on.
    """

    def __init__(
        self,
        *,
        lease: Lease,
        record: RunRecord,
        spec: WorkflowSpec,
        store: Store,
        pools: WorkerPools,
        admission: Admission,
        settings: SchedulerSettings,
        capacity: CapacityLimiter | None = None,
    ) -> None:
        self.lease = lease
        self.run_id = lease.run_id
        self._record = record
        self._spec = spec
        self._store = store
        self._pools = pools
        self._admission = admission
        self._settings = settings
        self._order = record.create_time.timestamp()
        self._cancel = asyncio.Event()
        self._drain = asyncio.Event()
        self._wake = asyncio.Event()
        self._started = record.state is RunState.RUNNING
        self._queued = record.state is RunState.QUEUED
        self.states = {step.step_id: step.state for step in record.steps}
        self._errors = {step.step_id: step.error for step in record.steps}
        self._due = {
            step.step_id: step.due_time.timestamp() if step.due_time else None
            for step in record.steps
        }
        self._first_start = {
            step.step_id: step.start_time.timestamp() if step.start_time else None
            for step in record.steps
        }
        self._spent = {step.step_id: step.usage for step in record.steps}
        # Rework rounds (scheduler/gates.py): each step's round, what its next attempt
        # is told, and attempt numbers (they go on across rounds; retries count within).
        self._round = {step.step_id: step.round for step in record.steps}
        self._feedback = {step.step_id: step.feedback for step in record.steps}
        self._last_attempt = {step.step_id: step.attempts for step in record.steps}
        self._attempt_base = {step.step_id: step.attempts_before_round for step in record.steps}
        # Approval steps waiting for a person: timeout due, next look, looks in flight.
        self._approval_due = {
            step.step_id: step.due_time.timestamp() if step.due_time else time.time()
            for step in record.steps
            if step.state is StepState.WAITING_APPROVAL
        }
        self._check_at: dict[str, float] = {}
        self._checking: set[str] = set()
        # path -> the step that wrote its latest version (read once, then kept current).
        self._owners = PathOwners()
        self._position = {step.id: i for i, step in enumerate(spec.steps)}
        self._waiting_on = {
            step.id: sum(self.states[d] is not StepState.SUCCEEDED for d in step.depends_on)
            for step in spec.steps
        }
        self._ready_set: set[str] = set()
        for step_id, state in list(self.states.items()):
            self._set_state(step_id, state)
        self._direct_dependents: dict[str, list[str]] = {step.id: [] for step in spec.steps}
        for step in spec.steps:
            for dep in step.depends_on:
                self._direct_dependents[dep].append(step.id)
        self.in_flight = 0
        # Model capacity and declared fallbacks (scheduler/step_capacity.py).
        self._capacity = StepCapacity(
            limiter=capacity,
            settings=settings,
            spec=spec,
            run_provider=record.provider,
            store=store,
            lease=lease,
            persist=persist,
            api_key_of=lambda step_id: pools.api_key_of(spec.step(step_id).persona),
        )
        self._produced: dict[str, int] = {}
        """Bytes each step produced (this process saw): the next prompts' estimate."""

    # -- control from the engine --------------------------------------------------------

    def cancel(self) -> None:
        """Ends the run CANCELLED as soon as its steps in flight are stopped."""
        self._cancel.set()
        self._wake.set()

    def decision_recorded(self, step_id: str) -> None:
        """A person decided on a waiting step: look at it now."""
        self._check_at[step_id] = 0.0
        self._wake.set()

    def drain(self) -> None:
        """Starts nothing new; `drive` returns once the steps in flight have finished."""
        self._drain.set()
        self._wake.set()

    # -- the walk -------------------------------------------------------------------------

    def _set_state(self, step_id: str, state: StepState) -> None:
        """Every change of a step's state goes through here, to keep `_ready_set` true."""
        self.states[step_id] = state
        if state in (StepState.PENDING, StepState.QUEUED) and self._waiting_on[step_id] == 0:
            self._ready_set.add(step_id)
        else:
            self._ready_set.discard(step_id)

    def _ready(self) -> list[str]:
        """Steps that may be dispatched now (or when due), in workflow order."""
        return sorted(self._ready_set, key=self._position.__getitem__)

    async def drive(self, note: str) -> None:
        """Runs the remaining steps and records the run's final state.

        Args:
            note: why the run is driven again (a restart, a takeover); empty for a new run.

        Raises:
            LeaseLost: another scheduler took the run over; this one must stop.
            RunFinished: the run ended elsewhere.
        """
        run_id_var.set(self.run_id)
        self._owners = PathOwners(
            await persist("reading path owners", self._store.owned_paths, self.run_id)
        )
        if any(state is StepState.RUNNING for state in self.states.values()):
            reason = note or "the scheduler that ran it stopped"
            recovered = await persist(
                "recovering lost attempts", self._store.recover_run, self.lease, reason
            )
            for step_id in recovered:
                self._set_state(step_id, StepState.PENDING)
                self._due[step_id] = None
        if note and self._started:
            await self._mark_started(note)
        # A new run starts (RUN_STARTED) when its first step is admitted; until then it
        # is QUEUED if capacity holds it back (see _run_step).

        running: dict[asyncio.Task[StepOutcome], str] = {}
        try:
            while not self._cancel.is_set():
                now = time.time()
                next_due: float | None = None
                if not self._drain.is_set():
                    for step_id in approvals.checks_due(self, now):
                        running[asyncio.create_task(approvals.check(self, step_id))] = step_id
                    next_due = approvals.next_check(self, next_due)
                    for step_id in self._ready():
                        if len(running) >= self._settings.max_parallel_steps:
                            break
                        due = self._due[step_id]
                        if due is not None and due > now:
                            next_due = due if next_due is None else min(next_due, due)
                            continue
                        self._set_state(step_id, StepState.RUNNING)
                        running[asyncio.create_task(self._run_step(step_id))] = step_id
                if not running and (next_due is None or self._drain.is_set()):
                    break
                self._wake.clear()
                waker = asyncio.create_task(self._wake.wait())
                timeout = None if next_due is None else max(0.0, next_due - time.time())
                done, _ = await asyncio.wait(
                    {*running, waker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                waker.cancel()
                for finished in [task for task in running if task in done]:
                    self._settle(running.pop(finished), finished.result())
        finally:
            # On any exit no step task may go on calling workers or writing.
            for task in running:
                task.cancel()
            if running:
                stopped, stuck = await asyncio.wait(running, timeout=STOP_WAIT_SECONDS)
                for task in stopped:
                    if not task.cancelled():
                        task.exception()  # seen: the run's own outcome is decided below
                if stuck:
                    # Whatever they still try to write is refused once the run ended.
                    log.error(
                        "%d step tasks ignored cancellation for %gs", len(stuck), STOP_WAIT_SECONDS
                    )

        if self._cancel.is_set():
            await self._finish(RunState.CANCELLED, "cancelled by request")
        elif self._drain.is_set() and not self._all_finished():
            log.info("run %s handed back unfinished (draining)", self.run_id)
        else:
            failed = [s.id for s in self._spec.steps if self.states[s.id] is StepState.FAILED]
            if failed:
                first = failed[0]
                await self._finish(RunState.FAILED, f"step {first!r} failed: {self._errors[first]}")
            else:
                await self._finish(RunState.SUCCEEDED, "")

    def _all_finished(self) -> bool:
        return all(state.finished for state in self.states.values())

    async def _mark_started(self, note: str) -> None:
        if self._started and not note:
            return
        self._started = True  # before the write: concurrent steps must not both start it
        await persist("starting the run", self._store.start_run, self.lease, note)

    async def _finish(self, state: RunState, error: str) -> None:
        await persist("recording the end", self._store.finish_run, self.lease, state, error)

    def _settle(self, step_id: str, result: StepOutcome) -> None:
        if result.outcome is Outcome.SUCCEEDED:
            self._set_state(step_id, StepState.SUCCEEDED)
            for dependent in self._direct_dependents[step_id]:
                self._waiting_on[dependent] -= 1
                self._set_state(dependent, self.states[dependent])
        elif result.outcome is Outcome.FAILED:
            self._set_state(step_id, StepState.FAILED)
            self._errors[step_id] = result.error
            # The store blocked them in the failure's own transaction.
            for dependent in self._spec.dependents(step_id):
                if not self.states[dependent].finished:
                    self._set_state(dependent, StepState.BLOCKED)
        elif result.outcome is Outcome.REWORK and result.rework is not None:
            self._start_round(result.rework)
        elif result.outcome is Outcome.WAITING_APPROVAL:
            approvals.waiting(self, step_id, result.due)
        else:
            self._due[step_id] = result.due
            self._set_state(step_id, StepState.PENDING)

    def _start_round(self, rework: ReworkRequest) -> None:
        """The store has put these steps back to PENDING in a new round; so does memory."""
        for step_id in rework.steps:
            self._round[step_id] = rework.round
            self._feedback[step_id] = rework.feedback.get(step_id, "")
            self._attempt_base[step_id] = self._last_attempt[step_id]
            self._first_start[step_id] = None
            self._due[step_id] = None
            self._errors[step_id] = ""
            self.states[step_id] = StepState.PENDING
        self._waiting_on = {
            step.id: sum(self.states[d] is not StepState.SUCCEEDED for d in step.depends_on)
            for step in self._spec.steps
        }
        for step_id, state in list(self.states.items()):
            self._set_state(step_id, state)

    # -- one step ---------------------------------------------------------------------------

    async def _queue_step(self, step_id: str, reason: str) -> None:
        """The step waits, visibly (QUEUED), and its run too before its first step."""
        if not self._started and not self._queued:
            self._queued = True
            await persist("queueing the run", self._store.queue_run, self.lease, reason)
        await persist("queueing", self._store.queue_step, self.lease, step_id, reason)

    def _prompt_bytes(self, step_id: str) -> int:
        """About what the step's prompt will hold: the requirement, its instructions and
        its ancestors' output within the context budget (for the capacity estimate)."""
        context = sum(
            self._produced.get(a, 0) for a in self._spec.ancestors(step_id, MAX_CONTEXT_STEPS)
        )
        return (
            len(self._record.requirement.encode())
            + len(self._spec.step(step_id).instructions.encode())
            + min(context, self._settings.context_budget_bytes)
        )

    async def _run_step(self, step_id: str) -> StepOutcome:
        step_id_var.set(step_id)
        kind = self._spec.step(step_id).kind
        if kind is not StepKind.PERSONA:
            # Gates call the sandbox and approvals wait for a person: no worker capacity.
            await self._mark_started("")
            if kind is StepKind.GATE:
                return await gates.run_gate_step(self, step_id)
            return await approvals.ask(self, step_id)
        persona = self._spec.step(step_id).persona
        pool = self._pools.pool_for(persona)
        try:
            try:
                await self._capacity.admit(
                    step_id,
                    prompt_bytes=lambda: self._prompt_bytes(step_id),
                    run_order=self._order,
                    deadline=(self._first_start[step_id] or time.time())
                    + self._spec.deadline_for(step_id).total_seconds(),
                    on_wait=lambda reason: self._queue_step(step_id, reason),
                )
            except CapacityWaitTimeout as late:
                error = str(late)
                block = self._spec.dependents(step_id)
                await persist(
                    "recording a capacity timeout",
                    self._store.fail_step,
                    self.lease,
                    step_id,
                    error,
                    block,
                )
                return StepOutcome(Outcome.FAILED, error)
            try:
                if not self._admission.try_acquire(self.run_id, pool):
                    await self._queue_step(step_id, self._admission.why_full(pool))
                    await self._admission.acquire(self.run_id, pool, self._order)
            except AdmissionClosed:
                return StepOutcome(Outcome.NOT_DISPATCHED)
            self.in_flight += 1
            try:
                await self._mark_started("")
                return await self._dispatch(step_id, persona, pool)
            finally:
                self.in_flight -= 1
                self._admission.release(self.run_id, pool)
        finally:
            # A call admitted but never made (drained, cancelled) gives its capacity back.
            await self._capacity.release(step_id)

    def _budget_left(self, step_id: str) -> AttemptBudget | str:
        """What the step may still spend (within its own budget and the run's, whichever
        has less left), or why it may spend nothing more."""
        limits: list[tuple[str, Budget, Usage]] = []
        step_budget = self._spec.step(step_id).budget
        if step_budget is not None:
            limits.append((f"step {step_id}", step_budget, self._spent[step_id]))
        if self._spec.budget is not None:
            run_spent = sum(self._spent.values(), NO_USAGE)
            limits.append(("the run", self._spec.budget, run_spent))
        usd: float | None = None
        tokens: int | None = None
        for scope, budget, spent in limits:
            if budget.usd is not None:
                if spent.cost_usd >= budget.usd:
                    return (
                        f"budget exceeded: {scope} spent ${spent.cost_usd:.4f} of ${budget.usd:g}"
                    )
                left = budget.usd - spent.cost_usd
                usd = left if usd is None else min(usd, left)
            if budget.tokens is not None:
                if spent.total_tokens >= budget.tokens:
                    return (
                        f"budget exceeded: {scope} spent {spent.total_tokens} of "
                        f"{budget.tokens} tokens"
                    )
                left_tokens = budget.tokens - spent.total_tokens
                tokens = left_tokens if tokens is None else min(tokens, left_tokens)
        return AttemptBudget(usd=usd, tokens=tokens)

    async def _dispatch(self, step_id: str, persona: str, pool: str) -> StepOutcome:
        store, lease = self._store, self.lease
        route = self._capacity.route(step_id)
        provider = route.provider
        budget = self._budget_left(step_id)
        if isinstance(budget, str):
            block = self._spec.dependents(step_id)
            await persist(
                "recording a spent budget", store.fail_step, lease, step_id, budget, block
            )
            return StepOutcome(Outcome.FAILED, budget)
        attempt, dispatch, context = await persist(
            "starting a dispatch",
            store.start_dispatch_with_context,
            lease,
            step_id,
            provider,
            # The nearest ancestors only: a long chain must not make every step read
            # (and send) every earlier step's output.
            self._spec.ancestors(step_id, MAX_CONTEXT_STEPS),
            self._settings.context_budget_bytes,
        )
        self._last_attempt[step_id] = attempt
        now = time.time()
        first = self._first_start[step_id] or now
        self._first_start[step_id] = first
        deadline = first + self._spec.deadline_for(step_id).total_seconds()
        timeout = min(self._spec.timeout_for(step_id).total_seconds(), deadline - now)
        reports = _Reports(store, lease, step_id, attempt, dispatch)
        try:
            request = self._request(step_id, persona, attempt, budget, context)

            async def admit_call(ask: CallRequest) -> str:
                async def waiting(reason: str) -> None:
                    used = provider or self._settings.worker_provider
                    await reports(f"call {ask.call} is {reason}", used, None)

                return await self._capacity.admit_call(
                    step_id,
                    ask,
                    run_order=self._order,
                    # The attempt's end: the worker stops waiting then too.
                    deadline=now + timeout,
                    on_wait=waiting,
                )

            answer = await self._pools.client(pool).execute(
                request, timeout=timeout, report=reports, admit_call=admit_call
            )
            await self._capacity.settle(
                step_id,
                usage=answer.usage,
                calls=answer.calls,
                report=answer.rate_limits,
                failure=None,
            )
            result = validated_files(with_transcript(answer, step_id))
        except DispatchFailed as failed:
            failure, usage = failed.failure, failed.usage or reports.last_usage
            await self._capacity.settle(
                step_id,
                usage=usage,
                calls=failed.calls,
                report=failed.rate_limits,
                failure=failure,
            )
            if usage is not None:
                self._spent[step_id] = self._spent[step_id] + usage
        except asyncio.CancelledError:
            reports.cancel()
            raise
        else:
            notes = await reports.settle()
            self._spent[step_id] = self._spent[step_id] + result.usage
            self._produced[step_id] = len(result.summary.encode()) + sum(
                len(content) for _, content in result.files
            )
            record = StepResultRecord(
                summary=f"{route.label()} {result.summary}" if route.fallback else result.summary,
                files=result.files,
                provider=result.provider,
                model=result.model,
                usage=result.usage,
                result_json=result_json(result),
                shared_paths=self._spec.shared_paths,
            )
            if result.verdict == "changes_requested" and self._spec.step(step_id).on_fail:
                return await gates.review_sends_back(
                    self, step_id, attempt, dispatch, record, notes, result.findings
                )
            await persist(
                "recording a result",
                store.complete_step,
                lease,
                step_id,
                attempt,
                dispatch,
                record,
                notes=notes,
            )
            self._owners.note(step_id, (path for path, _ in result.files))
            return StepOutcome(Outcome.SUCCEEDED)
        notes = await reports.settle()
        return await self._after_failure(
            step_id, attempt, dispatch, failure, usage, deadline, notes
        )

    async def _after_failure(
        self,
        step_id: str,
        attempt: int,
        dispatch: int,
        failure: Failure,
        usage: Usage | None,
        deadline: float,
        notes: list[tuple[str, str]],
    ) -> StepOutcome:
        store, lease = self._store, self.lease
        settings = self._settings
        decision = decide(
            failure,
            # The retry policy counts the attempts of the current rework round.
            attempt=attempt - self._attempt_base[step_id],
            dispatch=dispatch,
            policy=self._spec.retry_for(step_id),
            seconds_to_deadline=deadline - time.time(),
            platform_backoff=(
                settings.platform_retry_initial_seconds,
                settings.platform_retry_max_seconds,
            ),
            overload_backoff=(
                settings.overload_retry_initial_seconds,
                settings.overload_retry_max_seconds,
            ),
        )
        reason = f"{decision.reason} [{failure.kind.value}]"
        if (
            decision.retry_in is None
            and failure.kind in FALLBACK_KINDS
            and deadline > time.time()
            and await self._capacity.take_fallback(step_id, reason)
        ):
            # The primary cannot serve: the next attempt goes to the declared fallback.
            decision = Decision(0.0, True, decision.reason)
            reason = f"{reason}; next: fallback {self._capacity.route(step_id).fallback}"
        if decision.retry_in is None:
            log.warning("step %s failed: %s", step_id, reason)
            block = self._spec.dependents(step_id)
            await persist(
                "recording a failure",
                store.fail_attempt,
                lease,
                step_id,
                attempt,
                dispatch,
                reason,
                usage=usage,
                retry_in=None,
                block=block,
                notes=notes,
            )
            return StepOutcome(Outcome.FAILED, reason)
        log.warning(
            "step %s attempt %d: %s; again in %.1fs", step_id, attempt, reason, decision.retry_in
        )
        if decision.consumes_attempt:
            due = await persist(
                "recording a failed attempt",
                store.fail_attempt,
                lease,
                step_id,
                attempt,
                dispatch,
                reason,
                usage=usage,
                retry_in=decision.retry_in,
                notes=notes,
            )
        else:
            due = await persist(
                "recording a lost attempt",
                store.lose_dispatch,
                lease,
                step_id,
                attempt,
                dispatch,
                reason,
                usage=usage,
                retry_in=decision.retry_in,
                notes=notes,
            )
        return StepOutcome(Outcome.WAITING, reason, due)

    def _request(
        self,
        step_id: str,
        persona: str,
        attempt: int,
        budget: AttemptBudget,
        context: list[StepContextRecord],
    ) -> AttemptRequest:
        step = self._spec.step(step_id)
        return AttemptRequest(
            run_id=self.run_id,
            step_id=step_id,
            attempt=attempt,
            persona=persona,
            requirement=self._record.requirement,
            instructions=step.instructions,
            dependencies=tuple(context),
            provider=self._capacity.route(step_id).provider,
            model=self._capacity.route(step_id).model,
            effort=self._spec.effort_for(step_id) or "",
            budget=budget,
            owned_paths=self._owned_paths_for(step_id, persona),
            shared_paths=self._spec.shared_paths,
            feedback=self._feedback[step_id],
            admit_calls=self._capacity.limits_calls(step_id),
        )

    def _owned_paths_for(self, step_id: str, persona: str) -> tuple[tuple[str, str], ...]:
        """The paths other steps wrote that this persona is expected to write under (its
        deliverables): where a clash can happen, without sending the whole tree."""
        found = get_persona(persona)
        targets = [d.path for d in found.deliverables] if found else []
        return self._owners.others_under(targets, step_id)

"""Drives one run: dispatches each step the moment its dependencies succeeded.

There are no level barriers: whenever a step finishes, every step that became ready
is dispatched at once (within the run's parallelism cap). All of a round's steps are
marked RUNNING in the store before any of their worker calls begins, so independent
steps really do overlap.
"""

from __future__ import annotations

import asyncio
import logging
import random

from maestro.core.errors import RETRYABLE_CODES, Internal, MaestroError
from maestro.core.log_setup import run_id_var, step_id_var
from maestro.paths import BadPath, check_file_size, normalize_artifact_path
from maestro.store import RunFinished, RunState, StepResultRecord, StepState, Store
from maestro.workflow import RetryPolicy, WorkflowSpec
from scheduler.context import choose_context
from scheduler.models import AttemptRequest, AttemptResult
from scheduler.settings import SchedulerSettings
from scheduler.worker_client import WorkerClient

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 300.0


def backoff_seconds(policy: RetryPolicy, failed_attempt: int) -> float:
    """Exponential backoff with equal jitter (half fixed, half random), capped."""
    ceiling = min(
        policy.max_backoff.total_seconds(),
        policy.initial_backoff.total_seconds() * 2 ** (failed_attempt - 1),
    )
    return random.uniform(ceiling / 2, ceiling)


def retry_delay(policy: RetryPolicy, failed_attempt: int, asked: float | None) -> float:
    """Our backoff, or longer when the failing service asked for more (retry-after).

    What it asks for is capped, so a bogus header cannot park a step for a day.
    """
    return max(backoff_seconds(policy, failed_attempt), min(asked or 0.0, MAX_RETRY_AFTER_SECONDS))


def validated_files(result: AttemptResult) -> AttemptResult:
    """Re-checks a worker's paths: the store only ever holds confined paths."""
    files = []
    seen: set[str] = set()
    for path, content in result.files:
        try:
            clean = normalize_artifact_path(path)
            check_file_size(clean, len(content))
        except BadPath as err:
            raise Internal(f"the worker returned a bad file: {err}") from None
        if clean in seen:
            raise Internal(f"the worker returned {clean!r} twice")
        seen.add(clean)
        files.append((clean, content))
    return result.model_copy(update={"files": tuple(files)})


class RunExecution:
    """One run's DAG walk. Cancelling the task that runs `drive` cancels its steps."""

    def __init__(
        self,
        *,
        run_id: str,
        spec: WorkflowSpec,
        requirement: str,
        provider: str,
        store: Store,
        worker: WorkerClient,
        settings: SchedulerSettings,
    ) -> None:
        self._run_id = run_id
        self._spec = spec
        self._requirement = requirement
        self._provider = provider
        self._store = store
        self._worker = worker
        self._settings = settings

    async def drive(self, *, redriven: bool) -> None:
        """Runs every remaining step and records the run's final state."""
        run_id_var.set(self._run_id)
        record = await self._store.get_run(self._run_id)
        if record is None:
            raise Internal(f"run {self._run_id} vanished from the store")
        states = {step.step_id: step.state for step in record.steps}
        errors = {step.step_id: step.error for step in record.steps}
        await self._store.start_run(self._run_id, redriven=redriven)

        running: dict[asyncio.Task[tuple[StepState, str]], str] = {}
        try:
            while True:
                # Two phases: every ready step is recorded RUNNING before any of their
                # worker calls begins, so steps dispatched together really overlap.
                started = []
                for step_id in self._ready(states, len(running)):
                    attempt = await self._store.start_attempt(self._run_id, step_id, self._provider)
                    states[step_id] = StepState.RUNNING
                    started.append((step_id, attempt))
                for step_id, attempt in started:
                    running[asyncio.create_task(self._run_step(step_id, attempt))] = step_id
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step_id = running.pop(task)
                    states[step_id], errors[step_id] = task.result()
                    if states[step_id] is StepState.FAILED:
                        # The store blocked them in the failure's own transaction.
                        for dependent in self._spec.dependents(step_id):
                            if states[dependent] is StepState.PENDING:
                                states[dependent] = StepState.BLOCKED
        finally:
            # On any exit (cancellation, or a failure of our own) no step task may go
            # on calling workers or writing after this run's fate is decided.
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

        failed = [s.id for s in self._spec.steps if states[s.id] is StepState.FAILED]
        if failed:
            first = failed[0]
            await self._store.finish_run(
                self._run_id, RunState.FAILED, f"step {first!r} failed: {errors[first]}"
            )
        else:
            await self._store.finish_run(self._run_id, RunState.SUCCEEDED, "")

    def _ready(self, states: dict[str, StepState], running: int) -> list[str]:
        free = self._settings.max_parallel_steps - running
        ready = [
            step.id
            for step in self._spec.steps
            if states[step.id] is StepState.PENDING
            and all(states[dep] is StepState.SUCCEEDED for dep in step.depends_on)
        ]
        return ready[: max(free, 0)]

    async def _run_step(self, step_id: str, attempt: int) -> tuple[StepState, str]:
        """Runs attempts until one succeeds or the retry policy gives up."""
        step_id_var.set(step_id)
        step = self._spec.step(step_id)
        policy = self._spec.retry_for(step_id)
        timeout = self._spec.timeout_for(step_id).total_seconds()
        while True:
            try:
                result = await self._attempt(
                    step_id, attempt, step.persona, step.instructions, timeout
                )
                await self._store.complete_step(
                    self._run_id,
                    step_id,
                    attempt,
                    StepResultRecord(
                        summary=result.summary,
                        files=result.files,
                        provider=result.provider,
                        model=result.model,
                        input_tokens=result.input_tokens,
                        output_tokens=result.output_tokens,
                    ),
                )
                return StepState.SUCCEEDED, ""
            except RunFinished:
                raise  # the run ended (cancelled) while this attempt was finishing
            except MaestroError as err:
                reason = f"{err.message} ({err.code.value})"
                if err.code in RETRYABLE_CODES and attempt < policy.max_attempts:
                    delay = retry_delay(policy, attempt, err.retry_after)
                    log.warning("attempt %d of %s failed, retrying: %s", attempt, step_id, reason)
                    await self._store.fail_attempt(
                        self._run_id, step_id, attempt, reason, retry_in=delay
                    )
                    await asyncio.sleep(delay)
                    attempt = await self._store.start_attempt(self._run_id, step_id, self._provider)
                    continue
                log.warning("step %s failed: %s", step_id, reason)
                await self._store.fail_attempt(
                    self._run_id,
                    step_id,
                    attempt,
                    reason,
                    retry_in=None,
                    block=self._spec.dependents(step_id),
                )
                return StepState.FAILED, reason

    async def _attempt(
        self, step_id: str, attempt: int, persona: str, instructions: str, timeout: float
    ) -> AttemptResult:
        ancestors = self._spec.ancestors(step_id)
        outputs = await self._store.step_outputs(self._run_id, ancestors)
        request = AttemptRequest(
            run_id=self._run_id,
            step_id=step_id,
            attempt=attempt,
            persona=persona,
            requirement=self._requirement,
            instructions=instructions,
            dependencies=choose_context(outputs, self._settings.context_budget_bytes),
            provider=self._provider,
        )

        async def on_progress(message: str, provider: str) -> None:
            await self._store.record_progress(self._run_id, step_id, attempt, message, provider)

        async def on_heartbeat() -> None:
            await self._store.record_heartbeat(self._run_id, step_id, attempt)

        result = await self._worker.execute(
            request, timeout=timeout, on_progress=on_progress, on_heartbeat=on_heartbeat
        )
        return validated_files(result)

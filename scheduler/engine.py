"""The scheduler's front door: accepts, cancels and re-drives runs.

Each run is driven by one asyncio task. Creating a run returns as soon as the run is
committed; the task goes on in the background. On start, every run the store still
calls unfinished is re-driven: attempts that were in flight are closed as lost and
their steps dispatched again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from maestro.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from maestro.store import NewRun, RunFinished, RunRecord, RunState, Store
from maestro.workflow import (
    WorkflowSpec,
    builtin_workflow,
    builtin_workflow_names,
    parse_workflow_yaml,
)
from scheduler.run_loop import RunExecution
from scheduler.settings import SchedulerSettings
from scheduler.worker_client import WorkerClient

log = logging.getLogger(__name__)

PROVIDERS = ("", "anthropic", "offline")
MAX_REQUIREMENT_CHARS = 20_000
MAX_WORKFLOW_YAML_BYTES = 256 * 1024
CANCEL_WAIT_SECONDS = 5.0


class Engine:
    """Owns every run task of this scheduler process."""

    def __init__(self, store: Store, worker: WorkerClient, settings: SchedulerSettings) -> None:
        self._store = store
        self._worker = worker
        self._settings = settings
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def create_run(
        self,
        *,
        workflow_name: str,
        workflow_yaml: str,
        requirement: str,
        provider: str,
        request_id: str,
    ) -> str:
        """Validates and records a run, starts it, and returns its id at once.

        Raises:
            InvalidArgument: bad workflow, requirement or provider.
            AlreadyExists: request_id was used for a different request.
        """
        spec = self._resolve_workflow(workflow_name, workflow_yaml)
        requirement = requirement.strip()
        if not requirement:
            raise InvalidArgument("requirement", "is required")
        if len(requirement) > MAX_REQUIREMENT_CHARS:
            raise InvalidArgument(
                "requirement",
                f"is {len(requirement)} characters; the limit is {MAX_REQUIREMENT_CHARS}",
            )
        if provider not in PROVIDERS:
            raise InvalidArgument(
                "provider", f"unknown provider {provider!r}; use 'anthropic' or 'offline'"
            )
        new_request = (requirement, provider, spec.model_dump_json())
        if request_id:
            existing = await self._store.find_run_by_request_id(request_id)
            if existing is not None:
                run_id = self._same_request(existing, new_request)
                if not existing.state.finished and run_id not in self._tasks:
                    # Recorded but not driven (cannot happen now that creation is
                    # shielded; kept so a retry can never return a dead run).
                    self._start(run_id, redriven=False)
                return run_id
        new = NewRun(
            run_id=uuid.uuid4().hex[:16],
            workflow_name=spec.name,
            spec_json=spec.model_dump_json(),
            requirement=requirement,
            provider=provider,
            request_id=request_id,
            steps=tuple((s.id, s.persona, s.depends_on) for s in spec.steps),
        )
        try:
            # Shielded: once the run is committed it must also be started, even if the
            # caller goes away (deadline, disconnect) in between.
            await asyncio.shield(self._create_and_start(new))
        except AlreadyExists:
            # Lost a race with a concurrent retry of the same request.
            existing = await self._store.find_run_by_request_id(request_id)
            if existing is None:
                raise
            return self._same_request(existing, new_request)
        return new.run_id

    async def _create_and_start(self, new: NewRun) -> None:
        await self._store.create_run(new)
        log.info("run %s created: workflow %s", new.run_id, new.workflow_name)
        self._start(new.run_id, redriven=False)

    @staticmethod
    def _same_request(existing: RunRecord, new: tuple[str, str, str]) -> str:
        """The existing run's id when a retried request is the same request."""
        if (existing.requirement, existing.provider, existing.spec_json) != new:
            raise AlreadyExists(
                "request_id: already used for a different request (run "
                f"{existing.run_id}); use a new request_id"
            )
        return existing.run_id

    @staticmethod
    def _resolve_workflow(name: str, text: str) -> WorkflowSpec:
        if text:
            if len(text.encode()) > MAX_WORKFLOW_YAML_BYTES:
                raise InvalidArgument(
                    "workflow_yaml", f"is larger than {MAX_WORKFLOW_YAML_BYTES} bytes"
                )
            return parse_workflow_yaml(text, source="workflow_yaml")
        if not name:
            raise InvalidArgument("workflow", "give workflow_name or workflow_yaml")
        # Only built-in names: a caller must never make the scheduler read its files.
        if name not in builtin_workflow_names():
            raise InvalidArgument(
                "workflow_name",
                f"unknown workflow {name!r}; built-in workflows: "
                + ", ".join(builtin_workflow_names()),
            )
        return builtin_workflow(name)

    async def cancel_run(self, run_id: str) -> None:
        """Cancels in-flight steps and ends the run CANCELLED.

        Raises:
            NotFound: no such run.
            FailedPrecondition: the run already finished.
        """
        run = await self._store.get_run(run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} does not exist")
        if run.state.finished:
            raise FailedPrecondition(f"run {run_id} already finished {run.state.value}")
        # Shielded: once its task is cancelled the run must also be recorded CANCELLED,
        # even if the caller gives up waiting (a second Ctrl-C) in between.
        await asyncio.shield(self._cancel(run_id))
        log.info("run %s cancelled", run_id)

    async def _cancel(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()
            # The task cancels its worker calls, which cancels them on the workers too.
            await asyncio.wait([task], timeout=CANCEL_WAIT_SECONDS)
        await self._store.finish_run(run_id, RunState.CANCELLED, "cancelled by request")

    @property
    def driven_run_ids(self) -> frozenset[str]:
        """The runs this scheduler is driving right now."""
        return frozenset(self._tasks)

    async def recover(self) -> int:
        """Re-drives every unfinished run; returns how many."""
        run_ids = await self._store.unfinished_run_ids()
        for run_id in run_ids:
            requeued = await self._store.requeue_interrupted_steps(run_id)
            log.info("re-driving run %s (steps put back: %s)", run_id, requeued or "none")
            self._start(run_id, redriven=True)
        return len(run_ids)

    async def shutdown(self) -> None:
        """Stops driving runs without ending them: the next start re-drives them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, run_id: str, *, redriven: bool) -> None:
        task = asyncio.create_task(self._drive(run_id, redriven=redriven), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))

    async def _drive(self, run_id: str, *, redriven: bool) -> None:
        run = await self._store.get_run(run_id)
        if run is None:
            log.error("run %s disappeared before it started", run_id)
            return
        execution = RunExecution(
            run_id=run_id,
            spec=WorkflowSpec.model_validate_json(run.spec_json),
            requirement=run.requirement,
            provider=run.provider,
            store=self._store,
            worker=self._worker,
            settings=self._settings,
        )
        try:
            await execution.drive(redriven=redriven)
        except asyncio.CancelledError:
            raise
        except RunFinished as err:
            # Ended from outside (a cancel that outran the step tasks): nothing to do.
            log.info("run %s ended while it was being driven: %s", run_id, err.message)
        except Exception:
            # A bug, not a step failure: the run must still end, and say so.
            log.exception("run %s crashed", run_id)
            await self._store.finish_run(
                run_id, RunState.FAILED, "internal scheduler error (see the scheduler log)"
            )

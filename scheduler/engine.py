"""The scheduler's front door: accepts, claims, cancels and hands back runs.

A run is driven by the scheduler that holds its lease. A new run is claimed by the
scheduler that accepted it, in the same transaction; a run whose owner stopped renewing
(killed, paused, partitioned) is claimed by another after its lease expires, and every
write the old owner might still attempt is refused (fencing). On SQLite there is one
scheduler per file, which takes every unfinished run at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from pydantic import ValidationError

from maestro.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MaestroError,
    Unavailable,
)
from maestro.store import Claim, Lease, LeaseLost, NewRun, RunFinished, RunRecord, RunState, Store
from maestro.store.listen import PostgresListener
from maestro.store.retention import expire_runs
from maestro.store.sql_approvals import DecisionRecord
from maestro.workflow import (
    VALIDATION_TIME_LIMIT_SECONDS,
    WorkflowSpec,
    builtin_workflow,
    builtin_workflow_names,
    parse_workflow_off_loop,
)
from scheduler.admission import Admission
from scheduler.capacity_setup import build_limiter
from scheduler.run_loop import RunDriver, persist
from scheduler.settings import SchedulerSettings
from scheduler.worker_client import WorkerPools

log = logging.getLogger(__name__)

PROVIDERS = ("", "anthropic", "offline", "bench")
MAX_REQUIREMENT_CHARS = 20_000
MAX_WORKFLOW_YAML_BYTES = 256 * 1024
CANCEL_WAIT_SECONDS = 5.0
RETENTION_BATCH = 100


def _problems(err: ValidationError, most: int = 3) -> str:
    """A validation error's first problems as `where: what; ...`, each kept short."""
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or 'workflow'}: {e['msg']}"[:200]
        for e in err.errors(include_url=False, include_input=False)
    ]
    more = f" (and {len(problems) - most} more)" if len(problems) > most else ""
    return "; ".join(problems[:most]) + more


@dataclass(frozen=True)
class Accepted:
    """What CreateRun answers: the run's id, and the run as recorded when this call
    recorded it (None when a repeated request_id found an earlier run)."""

    run_id: str
    created: RunRecord | None


class Engine:
    """Owns the runs this scheduler drives."""

    def __init__(self, store: Store, pools: WorkerPools, settings: SchedulerSettings) -> None:
        self._store = store
        self._pools = pools
        self._settings = settings
        self.scheduler_id = settings.scheduler_id
        self.admission = Admission(
            max_in_flight=settings.max_steps_in_flight,
            pool_max_in_flight=settings.pool_max_in_flight,
        )
        self.capacity = build_limiter(store, settings)
        self._drivers: dict[str, RunDriver] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._claim_now = asyncio.Event()
        self._accepting = True
        self._listener: PostgresListener | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Proves the store takes writes, takes the runs it should drive, and starts the
        lease and claim loops."""
        await self._store.heartbeat_scheduler(self.scheduler_id)
        if self._store.shared:
            self._listener = PostgresListener(
                self._store.url,
                ["maestro_cancel", "maestro_runs"],
                self._on_notify,
                self._claim_now.set,
            )
            await self._listener.wait_ready()
        await self._claim()
        self._background = [
            asyncio.create_task(self._renew_loop(), name="renew-leases"),
            asyncio.create_task(self._claim_loop(), name="claim-runs"),
        ]
        if self._settings.run_retention_days is not None:
            self._background.append(
                asyncio.create_task(
                    self._retention_loop(timedelta(days=self._settings.run_retention_days)),
                    name="expire-runs",
                )
            )

    async def readiness(self) -> None:
        """A real write: NOT_SERVING while the store cannot take one."""
        await self._store.heartbeat_scheduler(self.scheduler_id)

    async def drain(self) -> None:
        """Stops taking runs, lets dispatches in flight finish (up to `drain_seconds`),
        then hands every unfinished run back for another scheduler to go on with."""
        self._accepting = False
        for task in self._background:
            task.cancel()
        for driver in self._drivers.values():
            driver.drain()
        tasks = list(self._tasks.values())
        if tasks:
            log.info(
                "draining: %d runs, up to %.0fs for their attempts in flight",
                len(tasks),
                self._settings.drain_seconds,
            )
            await asyncio.wait(tasks, timeout=self._settings.drain_seconds)
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stops driving runs without ending them and gives their leases back."""
        self._accepting = False
        for task in [*self._background, *self._tasks.values()]:
            task.cancel()
        await asyncio.gather(*self._background, *self._tasks.values(), return_exceptions=True)
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        await self.capacity.close()
        unfinished = [run_id for run_id in self._drivers]
        self._drivers.clear()
        if unfinished:
            try:
                released = await self._store.release_leases(self.scheduler_id, unfinished)
                log.info("handed back %d unfinished runs", released)
            except MaestroError as err:
                log.warning("could not hand runs back (%s); their leases will expire", err)

    # -- creating and cancelling ----------------------------------------------------------

    async def create_run(
        self,
        *,
        workflow_name: str,
        workflow_yaml: str,
        requirement: str,
        provider: str,
        request_id: str,
        created_by: str = "",
    ) -> Accepted:
        """Validates and records a run, starts it, and returns at once.

        Raises:
            InvalidArgument: bad workflow, requirement or provider.
            AlreadyExists: request_id was used for a different request.
            Unavailable: the scheduler is stopping, or the store is unavailable.
        """
        if not self._accepting:
            raise Unavailable("the scheduler is shutting down; try again")
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
        spec = await self._resolve_workflow(workflow_name, workflow_yaml)
        spec_json = spec.model_dump_json()
        new_request = (requirement, provider, spec_json)
        if request_id:
            # Read first: a retry (often after a lost answer, maybe while the database
            # is busy) is answered by a read, which does not fail fast as a write does,
            # and does not make the other writes of its group run again.
            existing = await self._store.find_run_by_request_id(request_id)
            if existing is not None:
                return Accepted(self._same_request(existing, new_request), created=None)
        new = NewRun(
            run_id=uuid.uuid4().hex[:16],
            workflow_name=spec.name,
            spec_json=spec_json,
            requirement=requirement,
            provider=provider,
            request_id=request_id,
            created_by=created_by,
            steps=tuple((s.id, s.persona, s.kind.value, s.depends_on) for s in spec.steps),
        )
        owner = self.scheduler_id if len(self._drivers) < self._settings.max_runs else None
        try:
            # Shielded: once the run is committed it must also be driven, even if the
            # caller goes away (deadline, disconnect) in between.
            record = await asyncio.shield(self._create_and_start(new, owner, spec))
        except AlreadyExists:
            # Lost a race with a concurrent retry of the same request.
            existing = await self._store.find_run_by_request_id(request_id)
            if existing is None:
                raise
            return Accepted(self._same_request(existing, new_request), created=None)
        return Accepted(new.run_id, created=record)

    async def _create_and_start(
        self, new: NewRun, owner: str | None, spec: WorkflowSpec
    ) -> RunRecord:
        created = await self._store.create_run(
            new, owner=owner, lease_seconds=self._settings.lease_seconds
        )
        log.info("run %s created: workflow %s", new.run_id, new.workflow_name)
        if created.lease is None:
            self._claim_now.set()  # over our limit: the claim loops share it out
        else:
            self._start(created.lease, created.record, spec, note="")
        return created.record

    @staticmethod
    def _same_request(existing: RunRecord, new: tuple[str, str, str]) -> str:
        """The existing run's id when a retried request is the same request."""
        if (existing.requirement, existing.provider, existing.spec_json) != new:
            raise AlreadyExists(
                "request_id: already used for a different request (run "
                f"runs/{existing.run_id}); use a new request_id"
            )
        return existing.run_id

    @staticmethod
    async def _resolve_workflow(name: str, text: str) -> WorkflowSpec:
        if text:
            if len(text.encode()) > MAX_WORKFLOW_YAML_BYTES:
                raise InvalidArgument(
                    "workflow_yaml", f"is larger than {MAX_WORKFLOW_YAML_BYTES} bytes"
                )
            # Off the event loop, bounded in time: the loop drives every run.
            return await parse_workflow_off_loop(
                text, source="workflow_yaml", time_limit=VALIDATION_TIME_LIMIT_SECONDS
            )
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

    async def delete_run(self, run_id: str) -> None:
        """Deletes a finished run with everything it recorded.

        Raises:
            NotFound: no such run.
            FailedPrecondition: the run has not finished.
        """
        await self._store.delete_run(run_id)
        log.info("run %s deleted", run_id)

    async def decide_step(
        self,
        run_id: str,
        step_id: str,
        decision: str,
        *,
        comment: str,
        decided_by: str,
        request_id: str,
    ) -> DecisionRecord:
        """Records a person's decision; the run's driver (here, or on the scheduler that
        owns it, which polls) applies it.

        Raises:
            NotFound: no such run or step.
            FailedPrecondition: the step does not wait for a decision.
        """
        decided = await self._store.record_decision(
            run_id,
            step_id,
            decision,
            comment=comment,
            decided_by=decided_by,
            request_id=request_id,
        )
        driver = self._drivers.get(run_id)
        if driver is not None:
            driver.decision_recorded(step_id)
        return decided

    async def cancel_run(self, run_id: str) -> None:
        """Cancels the run wherever it is driven and waits (briefly) until it ended.

        Raises:
            NotFound: no such run.
            FailedPrecondition: the run already finished.
        """
        request = await self._store.request_cancel(run_id)
        if request.state.finished:
            raise FailedPrecondition(f"run runs/{run_id} already finished {request.state.value}")
        driver = self._drivers.get(run_id)
        if driver is None and not request.lease_live:
            # Nobody drives it (its owner died, or it waits for capacity): take it, so
            # the cancellation does not wait for a lease to expire.
            await self._claim(only=run_id)
            driver = self._drivers.get(run_id)
        if driver is not None:
            driver.cancel()
        await self._wait_finished(run_id)
        log.info("run %s cancelled", run_id)

    async def _wait_finished(self, run_id: str) -> None:
        """Waits up to CANCEL_WAIT_SECONDS for the run's final state (any scheduler's)."""
        task = self._tasks.get(run_id)
        if task is not None:
            await asyncio.wait([task], timeout=CANCEL_WAIT_SECONDS)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CANCEL_WAIT_SECONDS
        while loop.time() < deadline:
            progress = await self._store.run_progress([run_id])
            if run_id not in progress or progress[run_id][0].finished:
                return
            await asyncio.sleep(0.05)

    # -- ownership ------------------------------------------------------------------------

    @property
    def driven_run_ids(self) -> frozenset[str]:
        """The runs this scheduler is driving right now."""
        return frozenset(self._drivers)

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == "maestro_cancel":
            driver = self._drivers.get(payload)
            if driver is not None:
                driver.cancel()
        else:
            self._claim_now.set()

    async def _claim(self, only: str | None = None) -> None:
        if not self._accepting:
            return
        room = self._settings.max_runs - len(self._drivers)
        if room <= 0:
            return
        claims = await self._store.claim_runs(
            self.scheduler_id,
            limit=room,
            lease_seconds=self._settings.lease_seconds,
            # One scheduler per SQLite file (it holds the file's writer lock), so any
            # other owner recorded there is a scheduler that is gone.
            everything=not self._store.shared,
        )
        for claim in claims:
            await self._take(claim)

    async def _take(self, claim: Claim) -> None:
        run_id = claim.lease.run_id
        record = await self._store.get_run(run_id)
        if record is None:
            return
        if claim.taken_from:
            note = f"taken over from scheduler {claim.taken_from}"
        elif record.state is RunState.PENDING:
            note = ""
        else:
            note = "re-driven after its scheduler stopped"
        try:
            spec = WorkflowSpec.model_validate_json(record.spec_json)
        except ValidationError as err:
            # A stored run this code cannot read (a persona renamed, say) ends at once.
            reason = f"the stored workflow no longer loads: {_problems(err)}"
            log.error("run %s: %s", run_id, reason)
            await persist(
                "failing an unreadable run",
                self._store.finish_run,
                claim.lease,
                RunState.FAILED,
                reason,
            )
            return
        log.info(
            "run %s: driving it (lease %d)%s",
            run_id,
            claim.lease.token,
            f"; {note}" if note else "",
        )
        self._start(claim.lease, record, spec, note=note)
        if claim.cancel_requested:
            self._drivers[run_id].cancel()

    def _start(self, lease: Lease, record: RunRecord, spec: WorkflowSpec, *, note: str) -> None:
        driver = RunDriver(
            lease=lease,
            record=record,
            spec=spec,
            store=self._store,
            pools=self._pools,
            admission=self.admission,
            settings=self._settings,
            capacity=self.capacity,
        )
        run_id = lease.run_id
        self._drivers[run_id] = driver
        task = asyncio.create_task(self._drive(driver, note), name=f"run-{run_id}")
        self._tasks[run_id] = task

        def forget(_: asyncio.Task[None]) -> None:
            if self._tasks.get(run_id) is task:
                del self._tasks[run_id]
                self._drivers.pop(run_id, None)

        task.add_done_callback(forget)

    async def _drive(self, driver: RunDriver, note: str) -> None:
        run_id = driver.run_id
        try:
            await driver.drive(note)
        except asyncio.CancelledError:
            raise
        except (LeaseLost, RunFinished) as err:
            # Another scheduler took it over, or it ended elsewhere: stop quietly.
            log.info("run %s: stopped driving: %s", run_id, err.message)
        except Exception:
            # A bug, not a step failure: the run must still end, and say so.
            log.exception("run %s crashed", run_id)
            with contextlib.suppress(LeaseLost, RunFinished):
                await persist(
                    "failing a crashed run",
                    self._store.finish_run,
                    driver.lease,
                    RunState.FAILED,
                    "internal scheduler error (see the scheduler log)",
                )

    async def _renew_loop(self) -> None:
        interval = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                held = dict(
                    await self._store.renew_leases(self.scheduler_id, self._settings.lease_seconds)
                )
            except MaestroError as err:
                log.warning("could not renew leases: %s", err)
                continue
            for run_id, driver in list(self._drivers.items()):
                if run_id not in held:
                    # Taken over (we were too slow to renew): stop at once, write nothing.
                    log.warning("run %s: lease lost to another scheduler; stopping", run_id)
                    task = self._tasks.get(run_id)
                    if task is not None:
                        task.cancel()
                elif held[run_id]:
                    driver.cancel()

    async def _retention_loop(self, retention: timedelta) -> None:
        """Deletes finished runs older than the retention period, a batch at a time.

        Any scheduler may sweep (deleting a run twice is harmless), so every one does.
        """
        while True:
            try:
                while (
                    await expire_runs(self._store, retention=retention, batch=RETENTION_BATCH)
                    == RETENTION_BATCH
                ):
                    pass
            except MaestroError as err:
                log.warning("could not expire old runs: %s", err)
            await asyncio.sleep(self._settings.retention_sweep_seconds)

    async def _claim_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.claim_interval_seconds):
                    await self._claim_now.wait()
            self._claim_now.clear()
            try:
                await self._claim()
            except MaestroError as err:
                log.warning("could not claim runs: %s", err)

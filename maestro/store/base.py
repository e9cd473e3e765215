"""The store's interface, and the choice of implementation by database URL.

Every method that changes state also appends the matching event in the same
transaction: a state change is committed before anyone can hear of it, and an event
never describes a change that did not happen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

from maestro.core.errors import FailedPrecondition, InvalidArgument
from maestro.store.models import (
    ArtifactRecord,
    EventRecord,
    NewRun,
    RunRecord,
    RunState,
    StepOutputRecord,
    StepResultRecord,
)


class RunFinished(FailedPrecondition):
    """A write about a run that already reached its final state was refused."""


class Store(ABC):
    """Run state. One writer (the scheduler); any number of readers.

    Writes about a run's steps raise RunFinished once the run has ended, so nothing
    is ever recorded after its terminal event.
    """

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def check(self) -> None:
        """Raises when the store cannot serve reads and writes (for health)."""

    # -- writes (scheduler only) ------------------------------------------------------

    @abstractmethod
    async def create_run(self, new: NewRun) -> None:
        """Records a PENDING run with its steps and a RUN_CREATED event."""

    @abstractmethod
    async def start_run(self, run_id: str, *, redriven: bool = False) -> None:
        """Marks the run RUNNING (keeping its first start time) with RUN_STARTED."""

    @abstractmethod
    async def start_attempt(self, run_id: str, step_id: str, provider: str) -> int:
        """Opens the step's next attempt, marks the step RUNNING, emits STEP_STARTED.

        Returns:
            The new attempt's number (1 for the first).
        """

    @abstractmethod
    async def record_progress(
        self, run_id: str, step_id: str, attempt: int, message: str, provider: str
    ) -> None:
        """Appends a STEP_PROGRESS event and refreshes the attempt's heartbeat."""

    @abstractmethod
    async def record_heartbeat(self, run_id: str, step_id: str, attempt: int) -> None:
        """Refreshes the attempt's heartbeat time (no event)."""

    @abstractmethod
    async def complete_step(
        self, run_id: str, step_id: str, attempt: int, result: StepResultRecord
    ) -> bool:
        """Records the result, its artifacts and STEP_SUCCEEDED, once.

        Returns:
            False when this attempt's result was already recorded (a repeated delivery).
        """

    @abstractmethod
    async def fail_attempt(
        self,
        run_id: str,
        step_id: str,
        attempt: int,
        reason: str,
        *,
        retry_in: float | None,
        block: Sequence[str] = (),
    ) -> None:
        """Closes a failed attempt: STEP_RETRY_SCHEDULED when `retry_in` is set, else
        the step is FAILED with STEP_FAILED, and the steps in `block` that are still
        PENDING become BLOCKED (STEP_BLOCKED), all in one transaction."""

    @abstractmethod
    async def finish_run(self, run_id: str, state: RunState, error: str) -> None:
        """Ends the run with its terminal event; unfinished steps become CANCELLED."""

    @abstractmethod
    async def requeue_interrupted_steps(self, run_id: str) -> list[str]:
        """After a restart: attempts left RUNNING are closed as lost, their steps PENDING.

        Returns:
            The ids of the steps put back.
        """

    # -- reads --------------------------------------------------------------------------

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    async def run_finished(self, run_id: str) -> bool:
        """Whether the run reached a final state (False for an unknown run)."""

    @abstractmethod
    async def find_run_by_request_id(self, request_id: str) -> RunRecord | None: ...

    @abstractmethod
    async def list_runs(
        self, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[RunRecord]:
        """Runs newest first, starting after the (create time, run id) cursor."""

    @abstractmethod
    async def unfinished_run_ids(self) -> list[str]: ...

    @abstractmethod
    async def events_after(
        self, run_id: str, after_sequence: int, limit: int = 500
    ) -> list[EventRecord]: ...

    @abstractmethod
    async def list_artifacts(self, run_id: str) -> list[ArtifactRecord]:
        """Artifacts without content, by path."""

    @abstractmethod
    async def get_artifact(self, run_id: str, path: str) -> ArtifactRecord | None:
        """One artifact with its content."""

    @abstractmethod
    async def step_outputs(self, run_id: str, step_ids: Sequence[str]) -> list[StepOutputRecord]:
        """Summaries and files of the given succeeded steps, in the order asked."""


async def open_store(url: str, *, writer: bool = False) -> Store:
    """Opens the store a database URL names (`sqlite:///path/to/file.db`).

    Args:
        url: the database URL.
        writer: open it as the one writer (the scheduler); readers pass False.
    """
    if url.startswith("sqlite:///"):
        from maestro.store.sqlite import SqliteStore

        return await SqliteStore.open(url.removeprefix("sqlite:///"), writer=writer)
    raise InvalidArgument("database", f"unsupported database URL {url!r}; use sqlite:///PATH")

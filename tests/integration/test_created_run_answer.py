"""CreateRun's answer is built from the record the scheduler made, not read back.

It must be exactly what GetRun would answer for the same run before it starts: the
scheduler's CreatedRun goes over the wire, and the gateway turns it into the public Run.
"""

from __future__ import annotations

from gateway.convert import created_run_to_proto as public_run
from gateway.convert import run_to_proto
from maestro.api.scheduler.v1 import scheduler_pb2
from maestro.store import NewRun, Store
from scheduler.convert import created_run_to_proto as recorded_run

# Every step kind, with and without dependencies, in an order that is not sorted.
STEPS = (
    ("requirements", "requirements_analyst", "persona", ()),
    ("backend", "backend_developer", "persona", ("requirements",)),
    ("approve", "", "approval", ("requirements",)),
    ("checks", "", "gate", ("backend", "approve")),
)


async def test_the_answer_to_create_run_is_the_run_read_back(store: Store) -> None:
    for owner, provider in (("scheduler-a", "offline"), (None, "")):
        new = NewRun(
            run_id=f"fresh{owner or ''}",
            workflow_name="every-kind",
            spec_json="{}",
            requirement="a REST API",
            provider=provider,
            request_id="",
            created_by="alice",
            steps=STEPS,
        )
        created = await store.create_run(new, owner=owner)
        # As the gateway receives it: serialized by the scheduler, parsed again.
        wire = scheduler_pb2.CreatedRun.FromString(recorded_run(created.record).SerializeToString())
        read_back = await store.get_run(new.run_id)
        assert read_back is not None
        assert public_run(new.run_id, wire) == run_to_proto(read_back)

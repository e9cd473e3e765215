"""The gateway's event hub against a store of plain lists: shared reads, visibility, and
a run deleted while it is followed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from gateway.events import EventHub
from maestro.core.errors import NotFound
from maestro.store import EventRecord, EventType, RunHead, RunState, Store

RUN = "r1"


def _event(sequence: int, kind: EventType) -> EventRecord:
    return EventRecord(
        run_id=RUN,
        sequence=sequence,
        type=kind,
        step_id="",
        time=datetime.now(UTC),
        message="",
        attributes={},
    )


class _Store:
    """The reads the hub makes, over a list of events; counts them."""

    shared = False

    def __init__(self, events: list[EventRecord], state: RunState) -> None:
        self.events = events
        self.state = state
        self.deleted = False
        self.head_reads = 0
        self.event_reads = 0

    async def run_head(self, run_id: str) -> RunHead | None:
        self.head_reads += 1
        await asyncio.sleep(0.01)  # long enough for every opening stream to ask
        if self.deleted:
            return None
        return RunHead(self.state, self.events[-1].sequence, "alice")

    async def run_progress(self, run_ids: Sequence[str]) -> dict[str, tuple[RunState, int]]:
        if self.deleted:
            return {}
        return {RUN: (self.state, self.events[-1].sequence)}

    async def events_after(self, run_id: str, after: int, limit: int = 500) -> list[EventRecord]:
        self.event_reads += 1
        await asyncio.sleep(0)
        if self.deleted:
            return []
        return [e for e in self.events if e.sequence > after][:limit]


def _hub(store: _Store) -> EventHub:
    return EventHub(cast(Store, store), poll_seconds=60)


async def _all(hub: EventHub, *, may_see: Any = lambda owner: owner == "alice") -> list[int]:
    return [e.sequence async for batch in hub.follow(RUN, 0, may_see=may_see) for e in batch]


async def test_streams_opening_at_once_share_one_read_of_the_run() -> None:
    store = _Store(
        [_event(1, EventType.RUN_CREATED), _event(2, EventType.RUN_SUCCEEDED)],
        RunState.SUCCEEDED,
    )
    hub = _hub(store)
    seen = await asyncio.gather(*(_all(hub) for _ in range(100)))
    assert seen == [[1, 2]] * 100
    assert store.head_reads == 1
    assert hub.followed == 0


async def test_a_caller_who_may_not_see_the_run_is_told_it_does_not_exist() -> None:
    store = _Store([_event(1, EventType.RUN_CREATED)], RunState.RUNNING)
    hub = _hub(store)
    with pytest.raises(NotFound):
        await _all(hub, may_see=lambda owner: False)
    assert hub.followed == 0  # nothing left behind for the poll to look at


async def test_a_run_deleted_while_followed_ends_its_streams_without_spinning() -> None:
    store = _Store([_event(1, EventType.RUN_CREATED)], RunState.RUNNING)
    hub = _hub(store)
    stream = hub.follow(RUN, 0, may_see=lambda owner: True)
    assert [e.sequence for e in await anext(stream)] == [1]
    # The run ends and is deleted before the follower reads its last events.
    store.events.append(_event(2, EventType.RUN_SUCCEEDED))
    store.deleted = True
    hub.notify({RUN: 2})
    with pytest.raises(NotFound):
        await asyncio.wait_for(anext(stream), 5)
    assert store.event_reads <= 3
    # A stream opened now is refused at once.
    with pytest.raises(NotFound):
        await _all(hub)


async def test_events_come_in_batches_of_what_is_ready_and_stop_at_the_terminal_one() -> None:
    kinds = [EventType.RUN_CREATED] + [EventType.STEP_STARTED] * 248 + [EventType.RUN_SUCCEEDED]
    # An event after the terminal one is never sent (it cannot exist; the cut is checked).
    events = [_event(i + 1, kind) for i, kind in enumerate(kinds)] + [
        _event(251, EventType.STEP_STARTED)
    ]
    store = _Store(events, RunState.SUCCEEDED)
    hub = _hub(store)
    batches = [
        [e.sequence for e in batch]
        async for batch in hub.follow(RUN, 0, may_see=lambda owner: True, batch=100)
    ]
    assert [len(batch) for batch in batches] == [100, 100, 50]
    assert [s for batch in batches for s in batch] == list(range(1, 251))


async def test_a_live_follower_gets_what_was_written_together_in_one_batch() -> None:
    store = _Store([_event(1, EventType.RUN_CREATED)], RunState.RUNNING)
    hub = _hub(store)
    stream = hub.follow(RUN, 0, may_see=lambda owner: True)
    assert [e.sequence for e in await anext(stream)] == [1]
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # nothing new: the follower waits
    store.events += [_event(2, EventType.STEP_STARTED), _event(3, EventType.STEP_SUCCEEDED)]
    hub.notify({RUN: 3})
    assert [e.sequence for e in await asyncio.wait_for(waiting, 5)] == [2, 3]
    store.events.append(_event(4, EventType.RUN_FAILED))
    hub.notify({RUN: 4})
    assert [e.sequence for e in await asyncio.wait_for(anext(stream), 5)] == [4]
    with pytest.raises(StopAsyncIteration):
        await anext(stream)

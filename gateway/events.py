"""Follows a run's event log: replay what is stored, then tail what comes next.

The stream reads the store, not the scheduler, so it survives a scheduler restart and
works the same whichever scheduler replica drives the run. A client that reconnects
with the last sequence it saw gets exactly the events after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from maestro.store import TERMINAL_EVENTS, EventRecord, Store

PAGE = 500


async def follow_events(
    store: Store, run_id: str, after_sequence: int, *, poll_seconds: float
) -> AsyncIterator[EventRecord]:
    """Yields events with sequence > after_sequence, in order, up to the terminal one."""
    last = after_sequence
    while True:
        # Read the state before the events: the terminal event is committed with the
        # final state, so a run finished before this read has all its events stored.
        finished = await store.run_finished(run_id)
        events = await store.events_after(run_id, last, PAGE)
        for event in events:
            yield event
            last = event.sequence
            if event.type in TERMINAL_EVENTS:
                return
        if finished and not events:
            return  # resumed after the terminal event: nothing more will come
        if len(events) < PAGE:
            # Nothing more stored yet: wait for the scheduler to commit the next event.
            await asyncio.sleep(poll_seconds)

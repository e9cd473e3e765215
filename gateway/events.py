"""The gateway's event hub: every live event stream of a run is fed by one reader.

Streams read the store, not a scheduler, so they survive scheduler restarts and work
whichever scheduler drives a run. What wakes them is a notification that a run's log
grew (the scheduler's WatchRuns stream on SQLite, LISTEN/NOTIFY on PostgreSQL); an
idle stream costs nothing but a parked coroutine. A slow poll of every followed run's
last sequence, one query for all of them, is the safety net for a lost notification.

Followers of one run share its reads: when the log grows, one of them reads the new
events into the run's buffer and all of them take theirs from it. A follower that
starts far behind (a replay) reads the store on its own until it catches up. Streams
that open at once share one read of the run's head too (whether it exists, who may
see it, where its log ends), and a stream joining a live run's feed reads nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from gateway.names import run_not_found
from maestro.api.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from maestro.core.client import insecure_channel
from maestro.store import TERMINAL_EVENTS, EventRecord, RunHead, Store
from maestro.store.listen import PostgresListener

log = logging.getLogger(__name__)

PAGE = 500
BUFFER = 2000
MAX_BATCH = 100
"""Events in one message of StreamRunEventBatches at most (their bytes are bounded too,
where the messages are built: gateway/convert.py, MAX_BATCH_BYTES)."""


class _Feed:
    """One followed run: what is known to be stored, and the latest events read."""

    def __init__(self, head: RunHead) -> None:
        self.known = head.last_sequence
        self.finished = head.state.finished
        self.owner = head.created_by
        self.gone = False
        """The run was deleted while followed: its streams end with NOT_FOUND."""
        self.buffer: list[EventRecord] = []
        self.followers = 0
        self.grew = asyncio.Condition()
        self.reading = asyncio.Lock()

    def buffered_after(self, last: int) -> list[EventRecord] | None:
        """Buffered events after `last`, or None when the buffer does not reach back."""
        if not self.buffer or self.buffer[0].sequence > last + 1:
            return None
        # The buffer is one unbroken stretch of the log: index by sequence, no scan.
        return self.buffer[last + 1 - self.buffer[0].sequence :]


class EventHub:
    """Follows runs for every stream of one gateway."""

    def __init__(self, store: Store, *, poll_seconds: float) -> None:
        self._store = store
        self._poll_seconds = poll_seconds
        self._feeds: dict[str, _Feed] = {}
        self._heads: dict[str, asyncio.Task[RunHead | None]] = {}
        """Reads of runs' heads in flight, shared by the streams opening meanwhile."""
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: PostgresListener | None = None

    @property
    def followed(self) -> int:
        """How many runs have at least one live stream."""
        return len(self._feeds)

    async def start(self, scheduler_address: str) -> None:
        """Starts the notification source for the store's kind, and the safety poll."""
        if self._store.shared:
            self._listener = PostgresListener(
                self._store.url, ["maestro_events"], self._on_notify, self.resync
            )
            await self._listener.wait_ready()
        else:
            self._tasks.append(
                asyncio.create_task(self._watch_scheduler(scheduler_address), name="watch-runs")
            )
        self._tasks.append(asyncio.create_task(self._poll(), name="event-poll"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            await self._listener.close()

    # -- notifications ----------------------------------------------------------------------

    def notify(self, changed: dict[str, int]) -> None:
        """Runs' logs now end at these sequences (from any source)."""
        for run_id, sequence in changed.items():
            feed = self._feeds.get(run_id)
            if feed is not None and sequence > feed.known:
                feed.known = sequence
                asyncio.get_running_loop().create_task(self._wake(feed))

    @staticmethod
    async def _wake(feed: _Feed) -> None:
        async with feed.grew:
            feed.grew.notify_all()

    def _gone(self, feed: _Feed) -> None:
        """The feed's run was deleted (only a finished run can be): its streams end."""
        if not feed.gone:
            feed.gone = feed.finished = True
            asyncio.get_running_loop().create_task(self._wake(feed))

    def _on_notify(self, channel: str, payload: str) -> None:
        run_id, _, sequence = payload.rpartition(":")
        if run_id and sequence.isdigit():
            self.notify({run_id: int(sequence)})

    def resync(self) -> None:
        """Notifications may have been lost: look at every followed run now."""
        asyncio.get_running_loop().create_task(self._check_all())

    async def _check_all(self) -> None:
        if not self._feeds:
            return
        asked = list(self._feeds)
        progress = await self._store.run_progress(asked)
        for run_id, (state, _) in progress.items():
            feed = self._feeds.get(run_id)
            if feed is not None:
                feed.finished = feed.finished or state.finished
        for run_id in asked:
            feed = self._feeds.get(run_id)
            if feed is not None and run_id not in progress:
                self._gone(feed)
        self.notify({run_id: sequence for run_id, (_, sequence) in progress.items()})

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                await self._check_all()
            except Exception as err:  # noqa: BLE001 - the safety net must outlive outages
                log.warning("event poll failed: %s", err)

    async def _watch_scheduler(self, address: str) -> None:
        """Follows the scheduler's WatchRuns stream, reconnecting when it ends."""
        delay = 0.1
        channel = insecure_channel(address)
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        try:
            while True:
                call = stub.WatchRuns(scheduler_pb2.WatchRunsRequest())
                try:
                    # Whatever happened while we were not watching is looked at afresh.
                    self.resync()
                    async for batch in call:
                        delay = 0.1
                        self.notify({c.run_id: c.last_sequence for c in batch.changes})
                except grpc.aio.AioRpcError as err:
                    log.debug("WatchRuns ended (%s); reconnecting", err.code().name)
                finally:
                    call.cancel()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        finally:
            await channel.close(None)

    # -- following ----------------------------------------------------------------------------

    async def follow(
        self,
        run_id: str,
        after_sequence: int,
        *,
        may_see: Callable[[str], bool],
        batch: int = MAX_BATCH,
    ) -> AsyncIterator[list[EventRecord]]:
        """Yields the run's events after `after_sequence`, in order, up to the terminal one,
        as they become known: each time, those ready then (at most `batch`, never none).

        Args:
            may_see: Whether the caller may see a run its creator (the argument) made.

        Raises:
            NotFound: there is no such run, or `may_see` says no.
        """
        feed = self._feeds.get(run_id)
        if feed is None or feed.finished:
            # A run is deleted only once finished: a live feed's head still holds, any
            # other is read again (once for every stream opening now).
            head = await self._head(run_id)
            if head is None or not may_see(head.created_by):
                raise run_not_found(run_id)
            feed = self._feeds.setdefault(run_id, _Feed(head))
        elif not may_see(feed.owner):
            raise run_not_found(run_id)
        feed.followers += 1
        try:
            last = after_sequence
            while True:
                events = await self._next(run_id, feed, last)
                for start in range(0, len(events), batch):
                    chunk = events[start : start + batch]
                    ended = next(
                        (i for i, event in enumerate(chunk) if event.type in TERMINAL_EVENTS),
                        None,
                    )
                    if ended is not None:
                        yield chunk[: ended + 1]
                        return
                    yield chunk
                    last = chunk[-1].sequence
                if events:
                    continue
                if feed.gone:
                    raise run_not_found(run_id)
                if feed.finished and last >= feed.known:
                    return  # resumed after the terminal event: nothing more will come
                await self._grown(feed, last)
        finally:
            feed.followers -= 1
            if feed.followers == 0 and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]

    async def _head(self, run_id: str) -> RunHead | None:
        """The run's head, from one read shared by every caller until it answers."""
        reading = self._heads.get(run_id)
        if reading is None:
            reading = asyncio.get_running_loop().create_task(self._store.run_head(run_id))
            self._heads[run_id] = reading

            def done(task: asyncio.Task[RunHead | None]) -> None:
                self._heads.pop(run_id, None)
                if not task.cancelled():
                    task.exception()  # its callers were told; nobody may be left to ask

            reading.add_done_callback(done)
        # Shielded: a stream that goes away does not cancel the others' read.
        return await asyncio.shield(reading)

    @staticmethod
    async def _grown(feed: _Feed, last: int) -> None:
        async with feed.grew:
            await feed.grew.wait_for(lambda: feed.known > last or feed.gone)

    async def _next(self, run_id: str, feed: _Feed, last: int) -> list[EventRecord]:
        """The events after `last` that are known to be stored (shared reads)."""
        if last >= feed.known:
            return []
        buffered = feed.buffered_after(last)
        if buffered:
            return buffered
        async with feed.reading:
            # Another follower may have read them while we waited for the lock.
            buffered = feed.buffered_after(last)
            if buffered:
                return buffered
            events = await self._store.events_after(run_id, last, PAGE)
            if not events:
                # Events known to be stored cannot be read: the run was deleted.
                self._gone(feed)
                return events
            newest = feed.buffer[-1].sequence if feed.buffer else None
            if newest is not None and last < newest:
                return events  # behind the buffer (a replay): leave the buffer be
            feed.known = max(feed.known, events[-1].sequence)
            feed.finished = feed.finished or events[-1].type in TERMINAL_EVENTS
            if newest is None or events[0].sequence != newest + 1:
                feed.buffer = []  # keep the buffer one unbroken stretch of the log
            feed.buffer.extend(events)
            del feed.buffer[:-BUFFER]
            return events

"""Announces committed event-log growth to watchers (gateways), coalesced per watcher.

The store calls `publish` after every commit that appended events; each watcher keeps
only the newest sequence per run until it takes them, so a slow watcher costs memory
in proportion to the runs that changed, never to the events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


class _Watcher:
    def __init__(self) -> None:
        self.pending: dict[str, int] = {}
        self.ready = asyncio.Event()


class ChangeFeed:
    def __init__(self) -> None:
        self._watchers: set[_Watcher] = set()
        self._closed = asyncio.Event()

    def publish(self, changed: dict[str, int]) -> None:
        for watcher in self._watchers:
            for run_id, sequence in changed.items():
                if sequence > watcher.pending.get(run_id, 0):
                    watcher.pending[run_id] = sequence
            watcher.ready.set()

    def close(self) -> None:
        """Ends every watch (the scheduler is stopping; gateways reconnect elsewhere)."""
        self._closed.set()
        for watcher in self._watchers:
            watcher.ready.set()

    async def watch(self) -> AsyncIterator[dict[str, int]]:
        """Yields {run_id: last_sequence} batches until the feed closes."""
        watcher = _Watcher()
        self._watchers.add(watcher)
        try:
            while not self._closed.is_set():
                await watcher.ready.wait()
                watcher.ready.clear()
                if watcher.pending:
                    batch, watcher.pending = watcher.pending, {}
                    yield batch
        finally:
            self._watchers.discard(watcher)

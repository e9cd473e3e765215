"""PostgreSQL LISTEN: notifications from other processes, delivered on the event loop.

Schedulers NOTIFY in the transaction that changes a run (events appended, a cancel
requested, a run released), so a listener hears of a change only once it is
committed. One thread per listener holds a dedicated connection; if the connection
drops it reconnects with backoff and then calls `on_resync`, because notifications
sent meanwhile are lost and the listener must look at the state afresh.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence

from maestro.store.postgres_db import postgres_conninfo

log = logging.getLogger(__name__)

Notification = Callable[[str, str], None]
"""Called on the event loop with (channel, payload)."""


class PostgresListener:
    """LISTENs on channels until closed."""

    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        on_notify: Notification,
        on_resync: Callable[[], None],
    ) -> None:
        self._conninfo = postgres_conninfo(url)
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_resync = on_resync
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self._thread.start()

    async def wait_ready(self, timeout: float = 5.0) -> bool:
        """Waits until the first LISTEN is in place (so nothing committed after is missed)."""
        return await asyncio.to_thread(self._ready.wait, timeout)

    def _run(self) -> None:
        import psycopg

        delay = 0.1
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=3) as conn:
                    for channel in self._channels:
                        conn.execute(f"LISTEN {channel}")
                    self._ready.set()
                    if not first:
                        self._loop.call_soon_threadsafe(self._on_resync)
                    first = False
                    delay = 0.1
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._loop.call_soon_threadsafe(
                                self._on_notify, note.channel, note.payload
                            )
            except psycopg.Error as err:
                if self._stop.is_set():
                    break
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", err, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
            except RuntimeError:
                break  # the event loop closed under us: we are shutting down

    async def close(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 5.0)

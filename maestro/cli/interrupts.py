"""Ctrl-C (SIGINT) and SIGTERM handling for long-running commands.

While a run is being followed, the first signal only sets an event, so the command
can cancel the run and wait for its terminal event. Before that (or on a second
signal) the command's task is cancelled outright, and its `async with` blocks still
stop the local services on the way out. Later signals are ignored: the command is
already stopping, and interrupting the shutdown would leave services behind.
"""

from __future__ import annotations

import asyncio
import signal
from types import TracebackType

# SIGHUP: the terminal went away; stop (and stop our services) as for SIGTERM.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupts:
    """Routes SIGINT/SIGTERM to the current task. Use as `with Interrupts() as stop:`."""

    def __init__(self) -> None:
        """Must be created inside the running event loop's task that it protects."""
        self.event = asyncio.Event()
        self.count = 0
        # When armed, the first signal is a polite request (the event) rather than an
        # abort; commands arm it once they can act on it.
        self.armed = False
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Interrupts must be created inside a task")
        self._task = task

    def __enter__(self) -> Interrupts:
        for sig in SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig in SIGNALS:
            self._loop.remove_signal_handler(sig)

    @property
    def interrupted(self) -> bool:
        """Whether a signal has arrived."""
        return self.count > 0

    def _on_signal(self) -> None:
        self.count += 1
        if self.count == 1:
            self.event.set()
            if not self.armed:
                self._task.cancel()
        elif self.count == 2:
            self._task.cancel()

    def absorb_cancel(self) -> bool:
        """After catching CancelledError: True (and the cancel is consumed) if one of
        our signals caused it, False if it came from elsewhere and must propagate."""
        if not self.interrupted:
            return False
        remaining = self._task.uncancel()
        while remaining:
            remaining = self._task.uncancel()
        return True

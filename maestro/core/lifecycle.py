"""Process lifecycle helpers for services started by a local stack."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

PARENT_PID_ENV = "MAESTRO_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def exit_with_parent() -> None:
    """Makes this process get SIGTERM when the process that started it dies.

    Only when MAESTRO_PARENT_PID is set (a local stack sets it). The child sets this up
    itself after exec, because a `preexec_fn` in a threaded parent is unsafe. If the
    parent is already gone by now, the SIGTERM is sent at once.
    """
    expected = os.environ.get(PARENT_PID_ENV, "")
    if not expected.isdigit():
        return
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != int(expected):
        log.warning("the process that started this service (pid %s) is gone", expected)
        os.kill(os.getpid(), signal.SIGTERM)

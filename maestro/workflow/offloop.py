"""Workflow validation for services: off the event loop, bounded in time and in number.

Parsing and validation are pure Python. With the limits of ``maestro.workflow.limits``
the worst document found costs about 35 ms of CPU (bench numbers in the README), so a
worker thread is enough: the interpreter hands the loop the GIL every few
milliseconds, and health checks and other calls keep being answered. A few threads
only, and a bounded queue in front of them, so a flood of large workflows is refused
(RESOURCE_EXHAUSTED, with a retry hint) instead of queueing without end.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from maestro.core.errors import InvalidArgument, ResourceExhausted
from maestro.workflow.loader import parse_workflow_yaml
from maestro.workflow.spec import WorkflowSpec

__all__ = [
    "MAX_VALIDATIONS_WAITING",
    "VALIDATION_THREADS",
    "VALIDATION_TIME_LIMIT_SECONDS",
    "parse_workflow_off_loop",
]

# What a service gives one validation (the worst case measured is about 35 ms).
VALIDATION_TIME_LIMIT_SECONDS = 5.0
VALIDATION_THREADS = 2
# Validations waiting for a thread, beyond the running ones.
MAX_VALIDATIONS_WAITING = 32
_RETRY_AFTER_SECONDS = 1.0

_executor: ThreadPoolExecutor | None = None
_admitted = 0
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(VALIDATION_THREADS, thread_name_prefix="workflow")
        return _executor


async def parse_workflow_off_loop(text: str, *, source: str, time_limit: float) -> WorkflowSpec:
    """Parses and validates YAML from a caller in a worker thread.

    Args:
        text: The workflow's YAML text, as received.
        source: What the text is to the caller (a field name such as
            ``workflow_yaml``), used in messages about the whole document.
        time_limit: Seconds the validation may take, waiting for a thread included.

    Returns:
        The validated workflow.

    Raises:
        WorkflowError: The workflow is invalid (INVALID_ARGUMENT, with the fields).
        InvalidArgument: Validation took longer than ``time_limit``.
        ResourceExhausted: Too many validations are already waiting (retry later).
    """
    global _admitted
    with _lock:
        if _admitted >= VALIDATION_THREADS + MAX_VALIDATIONS_WAITING:
            raise ResourceExhausted(
                "too many workflows are being validated at once; retry shortly",
                retry_after=_RETRY_AFTER_SECONDS,
            )
        _admitted += 1
    future = _pool().submit(parse_workflow_yaml, text, source=source)
    # Released when the work ends, or when it is cancelled before it began.
    future.add_done_callback(_release)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), time_limit)
    except TimeoutError:
        # Not begun: never will. Running: a thread cannot be stopped, but the work is
        # bounded, so it ends soon, holding its admission until then.
        future.cancel()
        raise InvalidArgument(
            source, f"took longer than {time_limit:g}s to validate; simplify the workflow"
        ) from None


def _release(_: object) -> None:
    global _admitted
    with _lock:
        _admitted -= 1

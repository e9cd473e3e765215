"""Which gateway a command talks to when none is configured: the local one.

With no `--gateway` and no MAESTRO_GATEWAY, `maestro runs ...` and `maestro artifacts`
work on the local data directory (`./.maestro/`), through the same API as a remote
gateway:

- a local stack already running there (`maestro up`, or a `maestro run` in another
  terminal) is used as it is, found by its lock and its gateway's port file;
- otherwise reads (list, get, events, artifacts) start a gateway alone, for the
  duration of the command, reading the directory's database (no scheduler: nothing
  is resumed and nothing spends tokens);
- a cancel, which the scheduler must carry out, starts the whole local stack for the
  duration of the command (it resumes the unfinished runs, says so, and reports
  how they stand before it stops).
"""

from __future__ import annotations

import asyncio
import fcntl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from maestro.cli.credentials import read_local_token
from maestro.cli.options import GatewayTarget
from maestro.cli.ports import LOOPBACK
from maestro.cli.run_cmd import local_target, note_resumed_runs, report_resumed
from maestro.cli.stack import GATEWAY, LocalStack, read_port
from maestro.cli.terminal import printable


@dataclass(frozen=True)
class Endpoint:
    """The gateway a command uses (address, token, TLS), and what to say about it."""

    target: GatewayTarget
    source: str
    """`--gateway`, `MAESTRO_GATEWAY`, or `local` (this directory's stack)."""
    read_only: bool = False
    """A gateway started alone: no scheduler behind it, nothing runs."""

    @property
    def address(self) -> str:
        """`host:port` of the gateway."""
        return self.target.address


class NoLocalData(Exception):
    """There is no local data directory with a database to read."""


class NoRunningStack(Exception):
    """The command needs a running scheduler, and no local stack runs here."""


def _note(text: str) -> None:
    print(printable(text), file=sys.stderr, flush=True)


def running_stack_address(data_dir: Path) -> str | None:
    """The gateway of a local stack running in `data_dir` now, or None.

    A running stack holds the directory's lock and has written its gateway's port.
    """
    lock_path = data_dir / "stack.lock"
    if not lock_path.exists():
        return None
    with lock_path.open("ab") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            port = read_port(data_dir / f"{GATEWAY}.port")
            return f"{LOOPBACK}:{port}" if port else None
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return None


@asynccontextmanager
async def local_gateway(data_dir: Path, *, writes: bool) -> AsyncIterator[Endpoint]:
    """The local gateway for one command (see the module's description).

    Raises:
        NoLocalData: nothing to read (no database in `data_dir`), for a read.
        StackError: the services did not start.
    """
    running = await asyncio.to_thread(running_stack_address, data_dir)
    if running is not None:
        token = await asyncio.to_thread(read_local_token, data_dir)
        yield Endpoint(GatewayTarget(running, token=token), "local")
        return
    if not writes:
        if not await asyncio.to_thread((data_dir / "maestro.db").exists):
            raise NoLocalData(
                f"no local runs: {data_dir} has no database yet "
                "(`maestro run` makes one; --gateway reads another Maestro)"
            )
        async with LocalStack(data_dir, read_only=True) as stack:
            yield Endpoint(await local_target(stack), "local", read_only=True)
        return
    stack = LocalStack(data_dir)
    _note(f"starting the local Maestro stack in {stack.data_dir} for this command")
    resumed = await note_resumed_runs(stack)
    async with stack:
        try:
            yield Endpoint(await local_target(stack), "local")
        finally:
            if resumed:
                await report_resumed(stack, resumed)


@asynccontextmanager
async def connect(
    endpoint: Endpoint | None, data_dir: Path, *, writes: bool = False
) -> AsyncIterator[Endpoint]:
    """`endpoint` when one was configured, else the local gateway for this command."""
    if endpoint is not None:
        yield endpoint
        return
    async with local_gateway(data_dir, writes=writes) as local:
        yield local

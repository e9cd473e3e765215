"""`maestro run`: submit a run, follow it live, download its artifacts, summarise.

Without a gateway address it starts a `LocalStack` for the duration of the command.
Ctrl-C cancels the run on the server, waits briefly for its terminal event, stops
the local services and exits 1.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.cli.credentials import read_local_token
from maestro.cli.download import Mode, download_artifacts
from maestro.cli.gateway_client import GatewayClient
from maestro.cli.interrupts import Interrupts
from maestro.cli.models import EventView, RunView
from maestro.cli.options import LOCAL_DATA_DIR, GatewayTarget, WorkflowChoice
from maestro.cli.render import (
    EventFormatter,
    event_to_dict,
    format_run,
    json_line,
    run_to_dict,
    terminal_safe,
)
from maestro.cli.stack import LocalStack
from maestro.core.errors import FailedPrecondition, MaestroError
from maestro.paths import BadPath

__all__ = ["DEFAULT_OUT_ROOT", "LOCAL_DATA_DIR", "RunOptions", "note_resumed_runs", "run_command"]

DEFAULT_OUT_ROOT = Path("maestro-out")
# How long a cancelled run gets to reach its terminal event before we stop waiting.
CANCEL_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class RunOptions:
    """Everything `maestro run` needs, already validated."""

    workflow: WorkflowChoice
    requirement: str
    provider: str = ""
    gateway: GatewayTarget | None = None
    out: Path | None = None
    mode: Mode = Mode.NEW
    json: bool = False
    data_dir: Path = LOCAL_DATA_DIR


def _note(text: str) -> None:
    print(terminal_safe(text), file=sys.stderr, flush=True)


async def run_command(opts: RunOptions) -> int:
    """Runs `maestro run` to completion and returns the exit code.

    Raises:
        MaestroError: the gateway refused or failed a call (the caller maps it).
        StackError: the local services did not start.
    """
    with Interrupts() as interrupts:
        try:
            if opts.gateway:
                return await _submit_and_follow(opts, opts.gateway, interrupts)
            stack = LocalStack(opts.data_dir, provider=opts.provider or None)
            _note(f"starting a local Maestro stack in {stack.data_dir} (logs in {stack.log_dir})")
            await note_resumed_runs(stack)
            async with stack:
                _note(f"gateway listening on {stack.gateway_address}")
                token = await asyncio.to_thread(read_local_token, stack.data_dir)
                target = GatewayTarget(stack.gateway_address, token=token)
                code = await _submit_and_follow(opts, target, interrupts, stack)
                _note("stopping the local stack")
            return code
        except asyncio.CancelledError:
            if not interrupts.absorb_cancel():
                raise
            _note("interrupted")
            return 1


async def _submit_and_follow(
    opts: RunOptions, target: GatewayTarget, interrupts: Interrupts, stack: LocalStack | None = None
) -> int:
    say = _note if opts.json else _out
    client = GatewayClient(
        target.address,
        token=target.token,
        tls=target.tls,
        root_certificates=target.root_certificates,
    )
    async with client:
        # From here a Ctrl-C cancels the run politely instead of aborting, so a run that
        # is being created is not left behind to be re-driven later.
        interrupts.armed = True
        run = await client.create_run(
            requirement=opts.requirement,
            workflow_name=opts.workflow.workflow_name,
            workflow_yaml=opts.workflow.workflow_yaml,
            provider=opts.provider,
            request_id=uuid.uuid4().hex,
        )
        provider = run.provider or "worker default"
        say(f"run {run.name} created (workflow {run.workflow}, provider {provider})")
        follower = asyncio.create_task(_show_events(client, run.name, opts.json))
        try:
            stop = asyncio.create_task(interrupts.event.wait())
            # A local service that dies would leave the run (and us) waiting forever.
            crash = asyncio.create_task(stack.wait_for_exit()) if stack is not None else None
            watched: set[asyncio.Future[Any]] = {follower, stop}
            if crash is not None:
                watched.add(crash)
            try:
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if crash is not None:
                    crash.cancel()
            if stack is not None and crash is not None and crash.done() and not crash.cancelled():
                name, code = crash.result()
                log_path = stack.log_path(name)
                _note(f"error: the local {name} exited with code {code}; see {log_path}")
                await _cancel_after_crash(client, run.name)
                return 1
            if not follower.done():
                await _cancel(client, run.name, follower)
            elif (failure := follower.exception()) is not None:
                # The stream failed for good; say why, then still report the run.
                _note(f"error: {failure}")
        finally:
            # Only still running when this task is being cancelled (a second Ctrl-C).
            follower.cancel()
        final = await client.get_run(run.name)
        out_dir: Path | None = None
        written, download_failed = 0, False
        if not interrupts.interrupted:
            out_dir = opts.out or DEFAULT_OUT_ROOT / final.id
            try:
                result = await download_artifacts(client, final.name, out_dir, mode=opts.mode)
            except (MaestroError, BadPath, OSError) as err:
                _note(f"error: could not download the artifacts of {final.name}: {err}")
                download_failed = True
            else:
                written = len(result.saved)
                if result.kept:
                    download_failed = True
                    _note(
                        f"warning: {len(result.kept)} artifacts were not written because "
                        f"something is already there in {out_dir} (kept as it was): "
                        + ", ".join(result.kept[:20])
                    )
        _summarise(final, out_dir, written, opts.json)
    if interrupts.interrupted or download_failed:
        return 1
    return 0 if final.state == "SUCCEEDED" else 1


async def note_resumed_runs(stack: LocalStack) -> None:
    """Says so when the stack's scheduler will pick up runs left unfinished earlier.

    Call before the stack starts. Its scheduler re-drives them (they may spend API
    tokens) and they are interrupted again when the stack stops, so the user must not
    learn of them by surprise.
    """
    resumed = await stack.unfinished_runs()
    if resumed:
        _note(
            f"note: resuming {len(resumed)} unfinished run(s) from an earlier session in "
            f"{stack.data_dir}: {', '.join(resumed)} (list them with `maestro up` and "
            "`maestro runs list`; cancel with `maestro runs cancel RUN`)"
        )


def _out(text: str) -> None:
    print(terminal_safe(text), flush=True)


async def _show_events(client: GatewayClient, run: str, as_json: bool) -> EventView | None:
    formatter = EventFormatter()
    last: EventView | None = None
    async with aclosing(client.follow_events(run)) as events:
        async for event in events:
            _out(json_line(event_to_dict(event)) if as_json else formatter.format(event))
            last = event
    return last


async def _cancel(
    client: GatewayClient, run: str, follower: asyncio.Task[EventView | None]
) -> None:
    _note(f"interrupted: cancelling {run} (Ctrl-C again to stop waiting)")
    try:
        await client.cancel_run(run)
    except FailedPrecondition:
        _note(f"{run} had already finished")
    except MaestroError as err:
        _note(f"warning: could not cancel {run}: {err.message}")
    try:
        await asyncio.wait_for(follower, CANCEL_WAIT_SECONDS)
    except TimeoutError:
        _note(f"{run} did not finish within {CANCEL_WAIT_SECONDS:g}s of the cancel request")
    except MaestroError as err:
        _note(f"error while following {run}: {err.message}")


async def _cancel_after_crash(client: GatewayClient, run: str) -> None:
    """Cancels the run if the services still can, so no later stack resumes it."""
    try:
        await client.cancel_run(run)
        _note(f"{run} cancelled")
    except MaestroError as err:
        _note(
            f"{run} could not be cancelled ({err.message}); the next local stack in this "
            "directory will resume it"
        )


def _summarise(run: RunView, out_dir: Path | None, written: int, as_json: bool) -> None:
    shown = str(out_dir) if out_dir is not None else None
    if not as_json:
        _out("")
        _out(format_run(run, artifacts_dir=shown, artifacts=written))
        return
    _out(json_line({"run": run_to_dict(run), "artifacts_dir": shown}))
    if run.state in ("FAILED", "CANCELLED") and run.error:
        # The text summary already shows the error; JSON users get it on stderr too.
        _note(f"run {run.state.lower()}: {run.error}")

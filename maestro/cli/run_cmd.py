"""`maestro run`: submit a run, follow it live, download its artifacts, summarise.

Without a gateway address it starts a `LocalStack` for the duration of the command.
Ctrl-C cancels the run on the server, waits briefly for its terminal event, stops
the local services and exits 1.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.cli.ask import ask_decision
from maestro.cli.credentials import read_local_token
from maestro.cli.download import Mode, download_artifacts
from maestro.cli.gateway_client import GatewayClient
from maestro.cli.interrupts import Interrupts
from maestro.cli.live import (
    USAGE_POLL_SECONDS,
    JsonLines,
    LiveTable,
    PlainLines,
    RunTracker,
    View,
)
from maestro.cli.models import RunView
from maestro.cli.options import LOCAL_DATA_DIR, GatewayTarget, WorkflowChoice
from maestro.cli.ports import LOOPBACK
from maestro.cli.render import (
    format_duration,
    format_outcome,
    format_run,
    json_line,
    plural,
    run_to_dict,
)
from maestro.cli.stack import LocalStack
from maestro.cli.terminal import ViewKind, choose_view, make_console, printable, use_color
from maestro.core.errors import FailedPrecondition, MaestroError
from maestro.paths import BadPath

__all__ = ["DEFAULT_OUT_ROOT", "LOCAL_DATA_DIR", "RunOptions", "note_resumed_runs", "run_command"]

log = logging.getLogger(__name__)

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
    plain: bool = False
    color: str = "auto"
    interactive: bool = False
    """Ask at once, on this terminal, when a step waits for a decision."""


def _note(text: str) -> None:
    print(printable(text), file=sys.stderr, flush=True)


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
            resumed = await note_resumed_runs(stack)
            async with stack:
                _note(f"gateway listening on {stack.gateway_address}")
                _note(metrics_line(stack))
                target = await local_target(stack)
                code = await _submit_and_follow(opts, target, interrupts, stack)
                if resumed:
                    await report_resumed(stack, resumed)
                _note("stopping the local stack")
            return code
        except asyncio.CancelledError:
            if not interrupts.absorb_cancel():
                raise
            _note("interrupted")
            return 1


async def local_target(stack: LocalStack) -> GatewayTarget:
    """The stack's gateway, with the local user's token from its data directory."""
    token = await asyncio.to_thread(read_local_token, stack.data_dir)
    return GatewayTarget(stack.gateway_address, token=token)


def client_for(target: GatewayTarget) -> GatewayClient:
    """A client of the gateway with the target's token and TLS settings."""
    return GatewayClient(
        target.address,
        token=target.token,
        tls=target.tls,
        root_certificates=target.root_certificates,
    )


def metrics_line(stack: LocalStack) -> str:
    """`metrics at http://127.0.0.1:PORT/metrics: gateway 4101, scheduler 4102, ...`."""
    urls = stack.metrics_urls
    if not urls:
        return "no metrics endpoints"
    ports = ", ".join(f"{name} {url.split(':')[-1].split('/')[0]}" for name, url in urls.items())
    return f"metrics at http://{LOOPBACK}:PORT/metrics: {ports}"


def _view(opts: RunOptions, tracker: RunTracker) -> View:
    # Questions and a table redrawn in place do not mix: interactive runs print lines.
    plain = opts.plain or opts.interactive
    kind = choose_view(as_json=opts.json, plain=plain, is_terminal=sys.stdout.isatty())
    if kind is ViewKind.JSON:
        return JsonLines(tracker)
    color = use_color(opts.color, is_terminal=sys.stdout.isatty())
    if kind is ViewKind.LIVE:
        return LiveTable(tracker, make_console(sys.stdout, color=color, live=True))
    return PlainLines(tracker, make_console(sys.stdout, color=color))


async def _submit_and_follow(
    opts: RunOptions, target: GatewayTarget, interrupts: Interrupts, stack: LocalStack | None = None
) -> int:
    async with client_for(target) as client:
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
        view = _view(opts, RunTracker(run))
        live = isinstance(view, LiveTable)
        provider = f", provider {run.provider}" if run.provider else ""
        created = f"run {run.name} created (workflow {run.workflow}{provider})"
        if isinstance(view, PlainLines):
            _out(created)
        else:
            _note(created)
        follower = asyncio.create_task(
            _show_events(client, run.name, view, poll=live, interactive=opts.interactive)
        )
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
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
                _note(
                    f"error: the local {name} exited with code {code}; see "
                    f"{stack.log_path(name)} and {stack.output_path(name)}"
                )
                await _cancel_after_crash(client, run.name)
                return 1
            if not follower.done():
                await _cancel(client, run.name, follower, view.note)
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
                        f"warning: {plural(len(result.kept), 'artifact')} not written because "
                        f"something is already there in {out_dir} (kept as it was): "
                        + ", ".join(result.kept[:20])
                    )
        _summarise(final, out_dir, written, opts.json, live)
    if interrupts.interrupted or download_failed:
        return 1
    return 0 if final.state == "SUCCEEDED" else 1


async def note_resumed_runs(stack: LocalStack) -> list[str]:
    """Says so when the stack's scheduler will pick up runs left unfinished earlier.

    Call before the stack starts. Its scheduler re-drives them (they may spend API
    tokens) and they are interrupted again when the stack stops, so the user must not
    learn of them by surprise.

    Returns:
        Their ids, to report their outcome before the stack stops (`report_resumed`).
    """
    resumed = await stack.unfinished_runs()
    if resumed:
        _note(
            f"note: resuming {plural(len(resumed), 'unfinished run')} from an earlier session "
            f"in {stack.data_dir}: {', '.join(resumed)} (see them with `maestro runs list`; "
            "cancel with `maestro runs cancel RUN`)"
        )
    return resumed


async def report_resumed(stack: LocalStack, run_ids: list[str]) -> None:
    """Says how each resumed run stands as the stack is about to stop."""
    async with client_for(await local_target(stack)) as client:
        for run_id in run_ids:
            try:
                run = await client.get_run(run_id)
            except MaestroError as err:
                _note(f"resumed run runs/{run_id}: cannot tell how it stands ({err.message})")
                continue
            _note(resumed_outcome(run))


def resumed_outcome(run: RunView) -> str:
    """One line on a resumed run: how it ended, or that it is interrupted again."""
    if run.is_final:
        took = f" in {format_duration(run.duration)}" if run.duration else ""
        why = f": {run.error}" if run.error else ""
        return f"resumed run {run.name} {run.state}{took}{why}"
    return (
        f"resumed run {run.name} is still {run.state}: stopping the stack interrupts it "
        "again, and the next local stack here resumes it"
    )


def _out(text: str) -> None:
    print(printable(text), flush=True)


async def _show_events(
    client: GatewayClient, run: str, view: View, *, poll: bool, interactive: bool = False
) -> None:
    async with view:
        poller = asyncio.create_task(_poll_usage(client, run, view)) if poll else None
        asking: set[asyncio.Task[None]] = set()
        try:
            async with aclosing(client.follow_events(run)) as events:
                async for event in events:
                    view.event(event)
                    if interactive and event.type == "APPROVAL_REQUESTED":
                        task = asyncio.create_task(
                            ask_decision(client, run, event.step_id, view.note)
                        )
                        asking.add(task)
                        task.add_done_callback(asking.discard)
        finally:
            for task in [*asking, *([poller] if poller is not None else [])]:
                task.cancel()
            await asyncio.gather(*asking, *([poller] if poller else []), return_exceptions=True)


async def _poll_usage(client: GatewayClient, run: str, view: View) -> None:
    """Refreshes the tokens spent so far (events carry them only when attempts end)."""
    while True:
        await asyncio.sleep(USAGE_POLL_SECONDS)
        try:
            view.refresh(await client.get_run(run))
        except MaestroError as err:
            log.debug("could not refresh %s: %s", run, err.message)


async def _cancel(
    client: GatewayClient, run: str, follower: asyncio.Task[None], say: Callable[[str], None]
) -> None:
    # `say` prints above a live table, which a line on stderr would tear.
    say(f"interrupted: cancelling {run} (Ctrl-C again to stop waiting)")
    try:
        await client.cancel_run(run)
    except FailedPrecondition:
        say(f"{run} had already finished")
    except MaestroError as err:
        say(f"warning: could not cancel {run}: {err.message}")
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


def _summarise(run: RunView, out_dir: Path | None, written: int, as_json: bool, live: bool) -> None:
    shown = str(out_dir) if out_dir is not None else None
    if as_json:
        _out(json_line({"run": run_to_dict(run), "artifacts_dir": shown}))
        if run.state in ("FAILED", "CANCELLED") and run.error:
            # The text summary already shows the error; JSON users get it on stderr too.
            _note(f"run {run.state.lower()}: {run.error}")
        return
    if live:
        # The table above already shows every step in its final state.
        _out(format_outcome(run, artifacts_dir=shown, artifacts=written))
        return
    _out("")
    _out(format_run(run, artifacts_dir=shown, artifacts=written))

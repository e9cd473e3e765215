"""The async commands other than `maestro run`: `up`, `runs ...` and `artifacts`.

Each returns an exit code; MaestroError from the gateway propagates to `main`, which
maps it to a message and a code in one place.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from contextlib import aclosing
from pathlib import Path

from maestro.cli.download import Mode, download_artifacts
from maestro.cli.interrupts import Interrupts
from maestro.cli.live import JsonLines, LiveTable, PlainLines, RunTracker, View
from maestro.cli.local import Endpoint, NoLocalData, NoRunningStack, connect, running_stack_address
from maestro.cli.models import run_name
from maestro.cli.options import LOCAL_DATA_DIR, GatewayTarget
from maestro.cli.render import (
    artifact_version_to_dict,
    capacity_to_dict,
    format_artifact_versions,
    format_capacity,
    format_run,
    format_run_list,
    format_size,
    json_line,
    plural,
    run_to_dict,
    step_to_dict,
)
from maestro.cli.run_cmd import (
    client_for,
    local_target,
    note_resumed_runs,
    report_resumed,
    resumed_outcome,
)
from maestro.cli.stack import LocalStack
from maestro.cli.terminal import ViewKind, choose_view, make_console, printable, use_color
from maestro.core.errors import MaestroError
from maestro.store import redact_url
from maestro.store.schema_revision import SCHEMA_REVISION

# Reading a gateway started alone, an unfinished run's stored events have all arrived
# once the stream has been quiet this long (nothing is driving the run).
STORED_EVENTS_IDLE_SECONDS = 1.0


def _out(text: str) -> None:
    print(printable(text), flush=True)


def _note(text: str) -> None:
    print(printable(text), file=sys.stderr, flush=True)


def db_upgrade(url: str) -> int:
    """`maestro db upgrade`: migrates the database to this Maestro's schema."""
    from maestro.store.migrate import upgrade

    _note(f"upgrading {redact_url(url)} to schema {SCHEMA_REVISION}")
    upgrade(url)
    _out(f"{redact_url(url)} is at schema {SCHEMA_REVISION}")
    return 0


async def up_command(
    data_dir: Path,
    *,
    port: int,
    provider: str | None,
    database_url: str | None = None,
    schedulers: int = 1,
) -> int:
    """Runs the local stack in the foreground until SIGINT/SIGTERM or a service dies."""
    with Interrupts() as interrupts:
        # The first signal means "stop cleanly", whatever phase we are in, except while
        # starting, where aborting the start is the clean way out.
        stack = LocalStack(
            data_dir,
            provider=provider,
            gateway_port=port,
            database_url=database_url,
            schedulers=schedulers,
        )
        _note(f"starting a local Maestro stack in {stack.data_dir} (logs in {stack.log_dir})")
        try:
            resumed = await note_resumed_runs(stack)
            async with stack:
                interrupts.armed = True
                address = stack.gateway_address
                _out(f"Maestro gateway listening on {address}")
                _note("Prometheus metrics:")
                for name, url in stack.metrics_urls.items():
                    _note(f"  {name:<16} {url}")
                _note(
                    f"its token is in {stack.data_dir / 'token'}: `maestro` commands run in "
                    "this directory use it; elsewhere pass --token or set MAESTRO_TOKEN"
                )
                _note(
                    "`maestro run` and `maestro runs ...` in this directory use this stack; "
                    f"from elsewhere, pass --gateway {address}"
                )
                _note("press Ctrl-C to stop")
                target = await local_target(stack)
                watchers = [
                    asyncio.create_task(_report_when_done(target, run_id)) for run_id in resumed
                ]
                stop = asyncio.create_task(interrupts.event.wait())
                crash = asyncio.create_task(stack.wait_for_exit())
                try:
                    await asyncio.wait({stop, crash}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    crash.cancel()
                    # A resumed run that ended was reported as it ended; say how the
                    # others stand before the stack stops.
                    pending = [
                        run_id
                        for run_id, watcher in zip(resumed, watchers, strict=True)
                        if not watcher.done()
                    ]
                    for watcher in watchers:
                        watcher.cancel()
                    await asyncio.gather(*watchers, return_exceptions=True)
                if crash.done() and not crash.cancelled():
                    name, code = crash.result()
                    _note(
                        f"error: {name} exited with code {code}; see {stack.log_path(name)} "
                        f"and {stack.output_path(name)}"
                    )
                    _note("stopping the other services")
                    return 1
                if pending:
                    await report_resumed(stack, pending)
                _note("stopping the local stack")
        except asyncio.CancelledError:
            if not interrupts.absorb_cancel():
                raise
            _note("interrupted")
            return 1
    return 0


async def _report_when_done(target: GatewayTarget, run_id: str) -> None:
    """Says how a resumed run ended, when it ends."""
    try:
        async with client_for(target) as client:
            async with aclosing(client.follow_events(run_id)) as events:
                async for _ in events:
                    pass
            _note(resumed_outcome(await client.get_run(run_id)))
    except MaestroError as err:
        _note(f"resumed run runs/{run_id}: lost track of it ({err.message})")


async def runs_list(
    endpoint: Endpoint | None,
    *,
    page_size: int,
    page_token: str,
    as_json: bool,
    waiting: bool = False,
    data_dir: Path = LOCAL_DATA_DIR,
) -> int:
    """`maestro runs list`."""
    try:
        async with connect(endpoint, data_dir) as where, client_for(where.target) as client:
            runs, next_token = await client.list_runs(
                page_size=page_size, page_token=page_token, waiting_for_decision=waiting
            )
    except NoLocalData as err:
        runs, next_token = [], ""
        if not as_json:
            _note(str(err))
    if as_json:
        _out(json_line({"runs": [run_to_dict(r) for r in runs], "next_page_token": next_token}))
        return 0
    _out(format_run_list(runs))
    if next_token:
        _note(f"more runs: --page-token {next_token}")
    return 0


async def status(
    endpoint: Endpoint | None, *, as_json: bool, data_dir: Path = LOCAL_DATA_DIR
) -> int:
    """`maestro status`: the model capacity a running scheduler holds calls to."""
    if endpoint is None:
        running = await asyncio.to_thread(running_stack_address, data_dir)
        if running is None:
            raise NoRunningStack(
                f"no Maestro stack is running in {data_dir}: start one with `maestro up`, "
                "or point at a gateway with --gateway or MAESTRO_GATEWAY"
            )
    async with connect(endpoint, data_dir) as where, client_for(where.target) as client:
        capacity = await client.get_capacity()
    _out(json_line(capacity_to_dict(capacity)) if as_json else format_capacity(capacity))
    return 0


async def runs_get(
    endpoint: Endpoint | None, run: str, *, as_json: bool, data_dir: Path = LOCAL_DATA_DIR
) -> int:
    """`maestro runs get RUN`."""
    async with connect(endpoint, data_dir) as where, client_for(where.target) as client:
        result = await client.get_run(run)
    _out(json_line(run_to_dict(result)) if as_json else format_run(result))
    return 0


async def runs_cancel(
    endpoint: Endpoint | None, run: str, *, as_json: bool = False, data_dir: Path = LOCAL_DATA_DIR
) -> int:
    """`maestro runs cancel RUN`: asks for the cancel and reports the state right after."""
    name = run_name(run)
    async with (
        connect(endpoint, data_dir, writes=True) as where,
        client_for(where.target) as client,
    ):
        result = await client.cancel_run(name)
    if as_json:
        _out(json_line(run_to_dict(result)))
    else:
        _out(f"cancel requested: {result.name} is {result.state}")
    return 0


async def runs_decide(
    endpoint: Endpoint | None,
    run: str,
    step: str,
    *,
    approve: bool,
    comment: str,
    as_json: bool = False,
    data_dir: Path = LOCAL_DATA_DIR,
) -> int:
    """`maestro runs approve|reject RUN STEP`: decides a step that waits for a person."""
    name = run_name(run)
    async with (
        connect(endpoint, data_dir, writes=True) as where,
        client_for(where.target) as client,
    ):
        # One id per command: a retry inside the client cannot decide twice.
        step_view = await client.decide_step(
            name, step, approve=approve, comment=comment, request_id=uuid.uuid4().hex
        )
    if as_json:
        _out(json_line(step_to_dict(step_view)))
    else:
        _out(f"{'approved' if approve else 'rejected'}: {name}/steps/{step} is {step_view.state}")
    return 0


async def runs_delete(
    endpoint: Endpoint | None, run: str, *, as_json: bool = False, data_dir: Path = LOCAL_DATA_DIR
) -> int:
    """`maestro runs delete RUN`: deletes a finished run with its events and artifacts."""
    name = run_name(run)
    async with (
        connect(endpoint, data_dir, writes=True) as where,
        client_for(where.target) as client,
    ):
        await client.delete_run(name)
    _out(json_line({"deleted": name}) if as_json else f"deleted {name}")
    return 0


async def runs_events(
    endpoint: Endpoint | None,
    run: str,
    *,
    after: int,
    as_json: bool,
    plain: bool = True,
    color: str = "auto",
    data_dir: Path = LOCAL_DATA_DIR,
) -> int:
    """`maestro runs events RUN`: prints events until the run's terminal event.

    Read from a gateway started alone (no local stack running), a run that is not
    finished is not going anywhere: its stored events are printed, and a note says so.
    """
    async with connect(endpoint, data_dir) as where, client_for(where.target) as client:
        # A unary call first: a wrong address or run id fails at once with a clear
        # error instead of going through the stream's reconnect attempts.
        current = await client.get_run(run)
        idle: float | None = None
        if where.read_only and not current.is_final:
            idle = STORED_EVENTS_IDLE_SECONDS
            _note(
                f"{current.name} is {current.state} but no local stack is driving it; "
                "these are its events so far (`maestro up` here resumes it)"
            )
        kind = choose_view(as_json=as_json, plain=plain, is_terminal=sys.stdout.isatty())
        view: View
        if kind is ViewKind.JSON:
            view = JsonLines(RunTracker(current))
        else:
            color_on = use_color(color, is_terminal=sys.stdout.isatty())
            console = make_console(sys.stdout, color=color_on, live=kind is ViewKind.LIVE)
            view = (
                LiveTable(RunTracker(current), console)
                if kind is ViewKind.LIVE
                else PlainLines(RunTracker(current), console)
            )
        async with view, aclosing(client.follow_events(run, after_sequence=after)) as events:
            while True:
                try:
                    async with asyncio.timeout(idle):
                        event = await anext(events)
                except (StopAsyncIteration, TimeoutError):
                    break
                view.event(event)
    return 0


async def artifacts_command(
    endpoint: Endpoint | None,
    run: str,
    *,
    out: Path | None,
    mode: Mode = Mode.NEW,
    as_json: bool = False,
    all_versions: bool = False,
    data_dir: Path = LOCAL_DATA_DIR,
) -> int:
    """`maestro artifacts RUN [--out DIR] [--force | --overwrite]`: downloads a run's
    artifacts into a new or empty directory (see maestro.cli.download)."""
    name = run_name(run)
    if all_versions:
        return await _list_versions(endpoint, name, as_json=as_json, data_dir=data_dir)
    async with connect(endpoint, data_dir) as where, client_for(where.target) as client:
        # The default directory is named after the run id, so ask the run first.
        target = out or Path("maestro-out") / (await client.get_run(name)).id
        result = await download_artifacts(client, name, target, mode=mode)
    written = result.saved
    if as_json:
        _out(
            json_line(
                {
                    "run": name,
                    "directory": str(target),
                    "files": [
                        {
                            "path": str(saved.path),
                            "artifact_path": saved.artifact_path,
                            "step": saved.step_id,
                            "size_bytes": saved.size_bytes,
                        }
                        for saved in written
                    ],
                    "kept": list(result.kept),
                }
            )
        )
        return report_kept(result.kept, target)
    for saved in written:
        _out(f"wrote {saved.path} ({format_size(saved.size_bytes)}, from step {saved.step_id})")
    _note(f"{plural(len(written), 'artifact')} of {name} in {target}")
    return report_kept(result.kept, target)


async def _list_versions(
    endpoint: Endpoint | None, name: str, *, as_json: bool, data_dir: Path
) -> int:
    """`maestro artifacts RUN --all-versions`: every write of every path, listed."""
    async with connect(endpoint, data_dir) as where, client_for(where.target) as client:
        versions = await client.list_artifacts(name, all_versions=True)
    if as_json:
        _out(json_line({"run": name, "versions": [artifact_version_to_dict(a) for a in versions]}))
        return 0
    _out(format_artifact_versions(versions))
    return 0


def report_kept(kept: list[str], directory: Path) -> int:
    """Says which files were not written over; exit code 1 when there were any."""
    if not kept:
        return 0
    _note(
        f"warning: {plural(len(kept), 'artifact')} not written because something is already "
        f"there in {directory} (kept as it was; --overwrite replaces files): "
        + ", ".join(kept[:20])
        + (" ..." if len(kept) > 20 else "")
    )
    return 1

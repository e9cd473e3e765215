"""The async commands other than `maestro run`: `up`, `runs ...` and `artifacts`.

Each returns an exit code; MaestroError from the gateway propagates to `main`, which
maps it to a message and a code in one place.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import aclosing
from pathlib import Path

from maestro.cli.download import Mode, download_artifacts
from maestro.cli.gateway_client import GatewayClient
from maestro.cli.interrupts import Interrupts
from maestro.cli.models import run_name
from maestro.cli.options import GatewayTarget
from maestro.cli.render import (
    EventFormatter,
    event_to_dict,
    format_run,
    format_run_list,
    format_size,
    json_line,
    run_to_dict,
    terminal_safe,
)
from maestro.cli.run_cmd import note_resumed_runs
from maestro.cli.stack import LocalStack
from maestro.store import redact_url
from maestro.store.schema_revision import SCHEMA_REVISION


def _out(text: str) -> None:
    print(terminal_safe(text), flush=True)


def _note(text: str) -> None:
    print(terminal_safe(text), file=sys.stderr, flush=True)


def client_for(target: GatewayTarget) -> GatewayClient:
    """A client of the gateway with the target's token and TLS settings."""
    return GatewayClient(
        target.address,
        token=target.token,
        tls=target.tls,
        root_certificates=target.root_certificates,
    )


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
            await note_resumed_runs(stack)
            async with stack:
                interrupts.armed = True
                address = stack.gateway_address
                _out(f"Maestro gateway listening on {address}; export MAESTRO_GATEWAY={address}")
                _note(
                    f"its token is in {stack.data_dir / 'token'}: `maestro` commands run in "
                    "this directory use it; elsewhere pass --token or set MAESTRO_TOKEN"
                )
                _note("press Ctrl-C to stop")
                stop = asyncio.create_task(interrupts.event.wait())
                crash = asyncio.create_task(stack.wait_for_exit())
                try:
                    await asyncio.wait({stop, crash}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    crash.cancel()
                if crash.done() and not crash.cancelled():
                    name, code = crash.result()
                    _note(f"error: {name} exited with code {code}; see {stack.log_path(name)}")
                    _note("stopping the other services")
                    return 1
                _note("stopping the local stack")
        except asyncio.CancelledError:
            if not interrupts.absorb_cancel():
                raise
            _note("interrupted")
            return 1
    return 0


async def runs_list(
    target: GatewayTarget, *, page_size: int, page_token: str, as_json: bool
) -> int:
    """`maestro runs list`."""
    async with client_for(target) as client:
        runs, next_token = await client.list_runs(page_size=page_size, page_token=page_token)
    if as_json:
        _out(json_line({"runs": [run_to_dict(r) for r in runs], "next_page_token": next_token}))
        return 0
    _out(format_run_list(runs))
    if next_token:
        _note(f"more runs: --page-token {next_token}")
    return 0


async def runs_get(target: GatewayTarget, run: str, *, as_json: bool) -> int:
    """`maestro runs get RUN`."""
    async with client_for(target) as client:
        result = await client.get_run(run)
    _out(json_line(run_to_dict(result)) if as_json else format_run(result))
    return 0


async def runs_cancel(target: GatewayTarget, run: str) -> int:
    """`maestro runs cancel RUN`: asks for the cancel and reports the state right after."""
    async with client_for(target) as client:
        result = await client.cancel_run(run)
    _out(f"cancel requested: {result.name} is {result.state}")
    return 0


async def runs_delete(target: GatewayTarget, run: str) -> int:
    """`maestro runs delete RUN`: deletes a finished run with its events and artifacts."""
    async with client_for(target) as client:
        await client.delete_run(run)
    _out(f"deleted {run_name(run)}")
    return 0


async def runs_events(target: GatewayTarget, run: str, *, after: int, as_json: bool) -> int:
    """`maestro runs events RUN`: prints events until the run's terminal event."""
    async with client_for(target) as client:
        # A unary call first: a wrong address or run id fails at once with a clear
        # error instead of going through the stream's reconnect attempts.
        await client.get_run(run)
        formatter = EventFormatter()
        async with aclosing(client.follow_events(run, after_sequence=after)) as events:
            async for event in events:
                _out(json_line(event_to_dict(event)) if as_json else formatter.format(event))
    return 0


async def artifacts_command(
    target: GatewayTarget, run: str, *, out: Path | None, mode: Mode = Mode.NEW
) -> int:
    """`maestro artifacts RUN [--out DIR] [--force | --overwrite]`: downloads a run's
    artifacts into a new or empty directory (see maestro.cli.download)."""
    name = run_name(run)
    async with client_for(target) as client:
        # The default directory is named after the run id, so ask the run first.
        directory = out or Path("maestro-out") / (await client.get_run(name)).id
        result = await download_artifacts(client, name, directory, mode=mode)
    for saved in result.saved:
        _out(f"wrote {saved.path} ({format_size(saved.size_bytes)}, from step {saved.step_id})")
    _note(f"{len(result.saved)} artifacts of {name} in {directory}")
    return report_kept(result.kept, directory)


def report_kept(kept: list[str], directory: Path) -> int:
    """Says which files were not written over; exit code 1 when there were any."""
    if not kept:
        return 0
    _note(
        f"warning: {len(kept)} artifacts were not written because something is already "
        f"there in {directory} (kept as it was; --overwrite replaces files): "
        + ", ".join(kept[:20])
        + (" ..." if len(kept) > 20 else "")
    )
    return 1

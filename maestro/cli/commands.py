"""The async commands other than `maestro run`: `up`, `runs ...` and `artifacts`.

Each returns an exit code; MaestroError from the gateway propagates to `main`, which
maps it to a message and a code in one place.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import aclosing
from pathlib import Path

from maestro.cli.download import download_artifacts
from maestro.cli.gateway_client import GatewayClient
from maestro.cli.interrupts import Interrupts
from maestro.cli.models import run_name
from maestro.cli.render import (
    EventFormatter,
    event_to_dict,
    format_run,
    format_run_list,
    format_size,
    json_line,
    run_to_dict,
)
from maestro.cli.run_cmd import note_resumed_runs
from maestro.cli.stack import LocalStack
from maestro.store import redact_url
from maestro.store.schema_revision import SCHEMA_REVISION


def _out(text: str) -> None:
    print(text, flush=True)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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


async def runs_list(address: str, *, page_size: int, page_token: str, as_json: bool) -> int:
    """`maestro runs list`."""
    async with GatewayClient(address) as client:
        runs, next_token = await client.list_runs(page_size=page_size, page_token=page_token)
    if as_json:
        _out(json_line({"runs": [run_to_dict(r) for r in runs], "next_page_token": next_token}))
        return 0
    _out(format_run_list(runs))
    if next_token:
        _note(f"more runs: --page-token {next_token}")
    return 0


async def runs_get(address: str, run: str, *, as_json: bool) -> int:
    """`maestro runs get RUN`."""
    async with GatewayClient(address) as client:
        result = await client.get_run(run)
    _out(json_line(run_to_dict(result)) if as_json else format_run(result))
    return 0


async def runs_cancel(address: str, run: str) -> int:
    """`maestro runs cancel RUN`: asks for the cancel and reports the state right after."""
    async with GatewayClient(address) as client:
        result = await client.cancel_run(run)
    _out(f"cancel requested: {result.name} is {result.state}")
    return 0


async def runs_events(address: str, run: str, *, after: int, as_json: bool) -> int:
    """`maestro runs events RUN`: prints events until the run's terminal event."""
    async with GatewayClient(address) as client:
        # A unary call first: a wrong address or run id fails at once with a clear
        # error instead of going through the stream's reconnect attempts.
        await client.get_run(run)
        formatter = EventFormatter()
        async with aclosing(client.follow_events(run, after_sequence=after)) as events:
            async for event in events:
                _out(json_line(event_to_dict(event)) if as_json else formatter.format(event))
    return 0


async def artifacts_command(address: str, run: str, *, out: Path | None) -> int:
    """`maestro artifacts RUN [--out DIR]`: downloads every artifact of a run."""
    name = run_name(run)
    async with GatewayClient(address) as client:
        # The default directory is named after the run id, so ask the run first.
        target = out or Path("maestro-out") / (await client.get_run(name)).id
        written = await download_artifacts(client, name, target)
    for saved in written:
        _out(f"wrote {saved.path} ({format_size(saved.size_bytes)}, from step {saved.step_id})")
    _note(f"{len(written)} artifacts of {name} in {target}")
    return 0

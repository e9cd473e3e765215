"""`maestro`: run workflows of AI personas locally or against a Maestro gateway.

Exit codes: 0 success; 1 a run that failed or was cancelled, or an error reaching or
inside the services; 2 bad input (arguments, workflow, or INVALID_ARGUMENT from the
server); 130 interrupted outside a run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from maestro.cli import commands, db_cmd
from maestro.cli.credentials import CredentialsError
from maestro.cli.download import Mode, UnusableOutput, check_output
from maestro.cli.options import (
    DEFAULT_WORKFLOW,
    LOCAL_DATA_DIR,
    NO_GATEWAY_MESSAGE,
    PROVIDERS,
    GatewayTarget,
    TargetError,
    WorkflowError,
    choose_provider,
    gateway_address,
    gateway_target,
    resolve_workflow,
)
from maestro.cli.render import format_personas, format_workflow, terminal_safe
from maestro.cli.run_cmd import RunOptions, run_command
from maestro.cli.stack import StackError
from maestro.core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    MaestroError,
    Unauthenticated,
    Unavailable,
)
from maestro.paths import BadPath
from maestro.personas import PERSONAS
from maestro.store import redact_url
from maestro.workflow import load_workflow

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad input found before anything is contacted; exit code 2."""


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each subcommand sets `handler`."""
    parser = argparse.ArgumentParser(
        prog="maestro",
        description="Run a DAG of AI personas that turns a requirement into artifacts.",
    )
    parser.set_defaults(handler=None)
    gateway = argparse.ArgumentParser(add_help=False)
    gateway.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        help="gateway address (default: $MAESTRO_GATEWAY)",
    )
    gateway.add_argument(
        "--token",
        help="bearer token for the gateway (default: $MAESTRO_TOKEN; for a gateway on this "
        "machine, ./.maestro/token)",
    )
    gateway.add_argument(
        "--ca-file",
        metavar="PEM",
        help="talk TLS to the gateway, trusting these CAs (default: $MAESTRO_CA_FILE)",
    )
    gateway.add_argument(
        "--tls",
        action="store_true",
        help="talk TLS to the gateway, trusting the system's CAs (or set MAESTRO_TLS=1)",
    )
    output = argparse.ArgumentParser(add_help=False)
    existing = output.add_mutually_exclusive_group()
    existing.add_argument(
        "--force",
        action="store_true",
        help="use a non-empty --out directory: add files, never replace existing ones",
    )
    existing.add_argument(
        "--overwrite",
        action="store_true",
        help="use a non-empty --out directory and replace existing files",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    provider = argparse.ArgumentParser(add_help=False)
    provider.add_argument(
        "--provider",
        choices=PROVIDERS,
        help="LLM provider (default: anthropic if ANTHROPIC_API_KEY is set, else offline)",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        parents=[gateway, as_json, provider, output],
        help="run a workflow and download its artifacts",
        description="Run a workflow. Without --gateway or $MAESTRO_GATEWAY, a local "
        "stack is started in ./.maestro/ for the duration of the run.",
    )
    run.add_argument(
        "workflow",
        nargs="?",
        default=DEFAULT_WORKFLOW,
        metavar="WORKFLOW",
        help=f"built-in workflow name or YAML file (default: {DEFAULT_WORKFLOW})",
    )
    run.add_argument("-r", "--requirement", required=True, help="what to build")
    run.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="a new or empty artifacts directory (default: ./maestro-out/RUN)",
    )
    run.set_defaults(handler=_run)

    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database-url",
        metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
        "(default: $MAESTRO_DATABASE_URL, else ./.maestro/maestro.db)",
    )

    up = sub.add_parser(
        "up",
        parents=[provider, database],
        help="start a local stack in the foreground until Ctrl-C",
    )
    up.add_argument("--port", type=_port, default=0, help="gateway port (default: a free one)")
    up.add_argument(
        "--schedulers",
        type=_positive,
        default=1,
        metavar="N",
        help="schedulers sharing the work (more than one needs PostgreSQL; default 1)",
    )
    up.set_defaults(handler=_up)

    db = sub.add_parser("db", help="manage the database schema")
    db.set_defaults(handler=lambda _args: _usage(db))
    db_sub = db.add_subparsers(title="commands", metavar="COMMAND")
    upgrade = db_sub.add_parser(
        "upgrade",
        parents=[database],
        help="bring a database to this Maestro's schema (creating it if empty)",
    )
    upgrade.set_defaults(handler=_db_upgrade)
    wait = db_sub.add_parser(
        "wait",
        parents=[database],
        help="wait until a database is reachable and at this Maestro's schema",
    )
    wait.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help="default 300")
    wait.set_defaults(handler=_db_wait)

    runs = sub.add_parser("runs", help="list, inspect, cancel and follow runs")
    runs.set_defaults(handler=lambda _args: _usage(runs))
    runs_sub = runs.add_subparsers(title="commands", metavar="COMMAND")
    listing = runs_sub.add_parser("list", parents=[gateway, as_json], help="list runs")
    listing.add_argument("--page-size", type=_non_negative, default=0, help="default 50")
    listing.add_argument("--page-token", default="", help="from a previous listing")
    listing.set_defaults(handler=_runs_list)
    get = runs_sub.add_parser("get", parents=[gateway, as_json], help="show a run")
    get.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    get.set_defaults(handler=_runs_get)
    cancel = runs_sub.add_parser("cancel", parents=[gateway], help="cancel a run")
    cancel.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    cancel.set_defaults(handler=_runs_cancel)
    delete = runs_sub.add_parser(
        "delete", parents=[gateway], help="delete a finished run with its events and artifacts"
    )
    delete.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    delete.set_defaults(handler=_runs_delete)
    events = runs_sub.add_parser(
        "events", parents=[gateway, as_json], help="follow a run's events until it ends"
    )
    events.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    events.add_argument(
        "--after", type=_non_negative, default=0, metavar="N", help="start after sequence N"
    )
    events.set_defaults(handler=_runs_events)

    artifacts = sub.add_parser(
        "artifacts", parents=[gateway, output], help="download a run's artifacts"
    )
    artifacts.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    artifacts.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="a new or empty directory (default: ./maestro-out/RUN)",
    )
    artifacts.set_defaults(handler=_artifacts)

    validate = sub.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("workflow", metavar="FILE_OR_NAME")
    validate.set_defaults(handler=_validate)

    personas = sub.add_parser("personas", help="list the personas workflows can use")
    personas.set_defaults(handler=_personas)

    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _note(text: str) -> None:
    print(terminal_safe(text), file=sys.stderr, flush=True)


def _target(args: argparse.Namespace) -> GatewayTarget:
    address = gateway_address(args.gateway, os.environ)
    if address is None:
        raise UsageError(NO_GATEWAY_MESSAGE)
    args.address = address  # for error messages
    return gateway_target(
        address, token=args.token, ca_file=args.ca_file, tls=args.tls, env=os.environ
    )


def _mode(args: argparse.Namespace) -> Mode:
    if args.overwrite:
        return Mode.OVERWRITE
    return Mode.ADD if args.force else Mode.NEW


def _run(args: argparse.Namespace) -> int:
    requirement = args.requirement.strip()
    if not requirement:
        raise UsageError("--requirement must not be empty")
    choice = resolve_workflow(args.workflow)
    if args.out is not None:
        check_output(args.out, _mode(args))  # before the run, not after it
    address = gateway_address(args.gateway, os.environ)
    target: GatewayTarget | None = None
    if address is None:
        picked = choose_provider(args.provider, os.environ)
        if picked.notice:
            _note(picked.notice)
        provider = picked.provider
    else:
        # A remote gateway's workers have their own keys: this machine's environment
        # says nothing about them, so only an explicit --provider is sent.
        provider = args.provider or ""
        target = _target(args)
    opts = RunOptions(
        workflow=choice,
        requirement=requirement,
        provider=provider,
        gateway=target,
        out=args.out,
        mode=_mode(args),
        json=args.json,
        data_dir=LOCAL_DATA_DIR,
    )
    return asyncio.run(run_command(opts))


def _database_url(args: argparse.Namespace) -> str | None:
    """--database-url, else $MAESTRO_DATABASE_URL (or its file in $MAESTRO_SECRETS_DIR),
    else None (the local SQLite file)."""
    url: str | None = args.database_url or db_cmd.configured_database_url() or None
    if url is not None and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise UsageError(
            f"--database-url {redact_url(url)!r}: use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB"
        )
    return url


def _up(args: argparse.Namespace) -> int:
    url = _database_url(args)
    if args.schedulers > 1 and (url is None or url.startswith("sqlite:///")):
        raise UsageError(
            "--schedulers: several schedulers need PostgreSQL (a SQLite file has one writer); "
            "add --database-url postgresql://USER@HOST:PORT/DB"
        )
    picked = choose_provider(args.provider, os.environ)
    if picked.notice:
        _note(picked.notice)
    return asyncio.run(
        commands.up_command(
            LOCAL_DATA_DIR,
            port=args.port,
            provider=picked.provider,
            database_url=url,
            schedulers=args.schedulers,
        )
    )


def _db_upgrade(args: argparse.Namespace) -> int:
    url = _database_url(args) or f"sqlite:///{(LOCAL_DATA_DIR / 'maestro.db').resolve()}"
    return commands.db_upgrade(url)


def _db_wait(args: argparse.Namespace) -> int:
    url = _database_url(args) or f"sqlite:///{(LOCAL_DATA_DIR / 'maestro.db').resolve()}"
    return asyncio.run(db_cmd.wait_command(url, timeout=args.timeout))


def _runs_list(args: argparse.Namespace) -> int:
    return asyncio.run(
        commands.runs_list(
            _target(args), page_size=args.page_size, page_token=args.page_token, as_json=args.json
        )
    )


def _runs_get(args: argparse.Namespace) -> int:
    return asyncio.run(commands.runs_get(_target(args), args.run, as_json=args.json))


def _runs_cancel(args: argparse.Namespace) -> int:
    return asyncio.run(commands.runs_cancel(_target(args), args.run))


def _runs_delete(args: argparse.Namespace) -> int:
    return asyncio.run(commands.runs_delete(_target(args), args.run))


def _runs_events(args: argparse.Namespace) -> int:
    target = _target(args)
    return asyncio.run(commands.runs_events(target, args.run, after=args.after, as_json=args.json))


def _artifacts(args: argparse.Namespace) -> int:
    return asyncio.run(
        commands.artifacts_command(_target(args), args.run, out=args.out, mode=_mode(args))
    )


def _validate(args: argparse.Namespace) -> int:
    print(terminal_safe(format_workflow(load_workflow(args.workflow))))
    return 0


def _personas(args: argparse.Namespace) -> int:
    print(terminal_safe(format_personas(PERSONAS.values())))
    return 0


def _report(err: BaseException, args: argparse.Namespace) -> int:
    """Prints one clear message for an error and returns its exit code."""
    where = getattr(args, "address", None)
    gateway = f"the gateway at {where}" if where else "the gateway"
    if isinstance(err, WorkflowError):
        _note(f"error: invalid workflow {args.workflow!r}:")
        for problem in err.problems:
            _note(f"  {problem.field}: {problem.reason}")
        if err.more:
            _note(f"  and {err.more} more problems")
        return 2
    if isinstance(err, UsageError | InvalidArgument | TargetError | UnusableOutput):
        _note(f"error: {err}")
        return 2
    if isinstance(err, Unauthenticated):
        _note(
            f"error: {gateway} refused the call ({err.message}); pass --token or set "
            "MAESTRO_TOKEN (`maestro up` writes the local stack's token to .maestro/token)"
        )
        return 1
    if isinstance(err, Unavailable) and args.handler is not _db_upgrade:
        _note(f"error: cannot reach {gateway} ({err.message})")
        return 1
    if isinstance(err, DeadlineExceeded):
        _note(f"error: {gateway} did not answer in time ({err.message})")
        return 1
    if isinstance(err, MaestroError):
        _note(f"error: {err.message}")
        return 1
    _note(f"error: {err}")
    return 1


def main(argv: list[str] | None = None) -> int:
    """Parses `argv` (default: sys.argv[1:]), runs the command, returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        # argparse exits on --help (0) and on bad usage (2); callers get a code back.
        return exit_.code if isinstance(exit_.code, int) else 2
    handler: Handler | None = args.handler
    if handler is None:
        return _usage(parser)
    try:
        return handler(args)
    except KeyboardInterrupt:
        _note("interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`maestro runs list | head`): not worth a traceback or
        # a message, but Python must not fail again flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (
        UsageError,
        MaestroError,
        StackError,
        CredentialsError,
        TargetError,
        BadPath,
        OSError,
    ) as err:
        return _report(err, args)


if __name__ == "__main__":
    sys.exit(main())

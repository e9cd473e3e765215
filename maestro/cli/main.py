"""`maestro`: run workflows of AI personas locally or against a Maestro gateway.

Exit codes:
    0  success
    1  a run that failed or was cancelled, or an error inside Maestro
    2  bad usage or input (arguments, the workflow, INVALID_ARGUMENT from the server),
       found before anything started
    3  the service cannot be reached (or refuses our credentials)
    130  interrupted before a run started
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

from maestro.cli import commands, db_cmd
from maestro.cli.checks import (
    InputProblems,
    gateway_problem,
    out_problem,
    provider_problem,
    requirement_problem,
)
from maestro.cli.completion import SHELLS, completion_script
from maestro.cli.credentials import CredentialsError, read_local_token
from maestro.cli.download import Mode, UnusableOutput, check_output
from maestro.cli.local import Endpoint, NoLocalData, NoRunningStack, running_stack_address
from maestro.cli.options import (
    ANTHROPIC_MODEL_ENV,
    DEFAULT_ANTHROPIC_MODEL,
    DEFAULT_WORKFLOW,
    GATEWAY_ENV,
    LOCAL_DATA_DIR,
    PROVIDERS,
    GatewayTarget,
    TargetError,
    WorkflowChoice,
    WorkflowError,
    choose_provider,
    gateway_target,
    resolve_workflow,
)
from maestro.cli.render import (
    format_personas,
    format_workflow,
    json_line,
    persona_to_dict,
    plural,
    terminal_safe,
)
from maestro.cli.run_cmd import RunOptions, run_command
from maestro.cli.stack import StackError
from maestro.cli.terminal import COLOR_MODES, printable
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

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """Bad input found before anything is contacted; exit code 2."""


def _version() -> str:
    try:
        return version("maestro")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error shows this (sub)command's usage and one prefix."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        print(f"Run '{self.prog} --help' for more.", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


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


def _command(
    sub: argparse._SubParsersAction[_Parser],
    name: str,
    summary: str,
    description: str,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> _Parser:
    """A subcommand with its one-line summary (in the parent's list) and description."""
    inherited: list[Any] = list(parents)
    parser = sub.add_parser(name, help=summary, description=description, parents=inherited)
    parser.set_defaults(parser=parser)
    return parser


def build_parser() -> _Parser:
    """The whole command line; each subcommand sets `handler` (and `parser`)."""
    parser = _Parser(
        prog="maestro",
        description="Run a DAG of AI personas that turns a requirement into artifacts. "
        "Exit codes: 0 success; 1 the run failed or was cancelled; 2 bad usage or input; "
        "3 the service cannot be reached.",
    )
    parser.add_argument("--version", action="version", version=f"maestro {_version()}")
    parser.set_defaults(handler=None, parser=parser)
    gateway = argparse.ArgumentParser(add_help=False)
    gateway.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        help=f"a gateway to use (default: ${GATEWAY_ENV}; else this directory's local stack)",
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
    colors = argparse.ArgumentParser(add_help=False)
    colors.add_argument(
        "--color",
        choices=COLOR_MODES,
        default="auto",
        help="colour output: auto (a terminal without NO_COLOR), always or never",
    )
    display = argparse.ArgumentParser(add_help=False, parents=[colors])
    display.add_argument(
        "--plain",
        action="store_true",
        help="one line per event instead of the live table (the default when not a terminal)",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    run = _command(
        sub,
        "run",
        "run a workflow and download its artifacts",
        "Run a workflow and show its steps live. Without --gateway or $MAESTRO_GATEWAY, "
        "the local stack in ./.maestro/ is used (started for the duration of the run "
        "unless `maestro up` runs there). Every input is checked before anything starts.",
        [gateway, as_json, provider, display, output],
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
    run.add_argument(
        "--interactive",
        action="store_true",
        help="on a terminal: when a step waits for a decision, ask at once (y/n/comment)",
    )
    run.set_defaults(handler=_run)

    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database-url",
        metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
        "(default: $MAESTRO_DATABASE_URL, else ./.maestro/maestro.db)",
    )

    up = _command(
        sub,
        "up",
        "start a local stack in the foreground until Ctrl-C",
        "Start every Maestro service on loopback (data in ./.maestro/) and keep them up "
        "until Ctrl-C. Prints the gateway's address and each service's metrics endpoint; "
        "`maestro run` and `maestro runs` in this directory use it.",
        [provider, database],
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

    db = _command(sub, "db", "manage the database schema", "Manage the database schema.")
    db.set_defaults(handler=lambda _args: _usage(db))
    db_sub = db.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    upgrade = _command(
        db_sub,
        "upgrade",
        "bring a database to this Maestro's schema (creating it if empty)",
        "Bring a database to this Maestro's schema, creating the tables if it is empty.",
        [database],
    )
    upgrade.set_defaults(handler=_db_upgrade)
    wait = _command(
        db_sub,
        "wait",
        "wait until a database is reachable and at this Maestro's schema",
        "Wait until a database is reachable and at this Maestro's schema (an init "
        "container's command).",
        [database],
    )
    wait.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help="default 300")
    wait.set_defaults(handler=_db_wait)

    runs = _command(
        sub,
        "runs",
        "list, inspect, cancel and follow runs",
        "List, inspect, cancel and follow runs: of --gateway, $MAESTRO_GATEWAY, or else "
        "the local data directory ./.maestro/ (no stack needs to be running).",
    )
    runs.set_defaults(handler=lambda _args: _usage(runs))
    runs_sub = runs.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    listing = _command(
        runs_sub, "list", "list runs", "List runs, newest first.", [gateway, as_json]
    )
    listing.add_argument("--page-size", type=_non_negative, default=0, help="default 50")
    listing.add_argument("--page-token", default="", help="from a previous listing")
    listing.add_argument(
        "--waiting", action="store_true", help="only runs with a step waiting for a decision"
    )
    listing.set_defaults(handler=_runs_list)
    get = _command(runs_sub, "get", "show a run", "Show a run and its steps.", [gateway, as_json])
    get.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    get.set_defaults(handler=_runs_get)
    cancel = _command(
        runs_sub,
        "cancel",
        "cancel a run",
        "Cancel a run and show its state right after.",
        [gateway, as_json],
    )
    cancel.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    cancel.set_defaults(handler=_runs_cancel)
    approve = _command(
        runs_sub,
        "approve",
        "approve a step that waits for a decision",
        "Approve an approval step that waits for a decision; the run goes on.",
        [gateway, as_json],
    )
    approve.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    approve.add_argument("step", metavar="STEP", help="the step's id")
    approve.add_argument("--comment", default="", help="why, or what to keep in mind")
    approve.set_defaults(handler=_runs_approve)
    reject = _command(
        runs_sub,
        "reject",
        "reject a step that waits for a decision",
        "Reject an approval step that waits for a decision: its on_reject steps run again "
        "with the comment as feedback, or the run fails naming the step and the comment.",
        [gateway, as_json],
    )
    reject.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    reject.add_argument("step", metavar="STEP", help="the step's id")
    reject.add_argument("--comment", required=True, help="what is wrong (the rework's feedback)")
    reject.set_defaults(handler=_runs_reject)
    delete = _command(
        runs_sub,
        "delete",
        "delete a finished run with its events and artifacts",
        "Delete a finished run with its events and artifacts.",
        [gateway, as_json],
    )
    delete.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    delete.set_defaults(handler=_runs_delete)
    events = _command(
        runs_sub,
        "events",
        "follow a run's events until it ends",
        "Print a run's events, one line each (from the start, or after --after N), "
        "until the run ends.",
        [gateway, as_json, colors],
    )
    events.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    events.add_argument(
        "--after", type=_non_negative, default=0, metavar="N", help="start after sequence N"
    )
    events.set_defaults(handler=_runs_events)

    artifacts = _command(
        sub,
        "artifacts",
        "download a run's artifacts",
        "Download every artifact of a run into a new or empty directory.",
        [gateway, as_json, output],
    )
    artifacts.add_argument("run", metavar="RUN", help="run id or runs/<id>")
    artifacts.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="a new or empty directory (default: ./maestro-out/RUN)",
    )
    artifacts.add_argument(
        "--all-versions",
        action="store_true",
        help="list every version of every path (who wrote it, round, attempt) instead of "
        "downloading",
    )
    artifacts.set_defaults(handler=_artifacts)

    status = _command(
        sub,
        "status",
        "show model capacity: limits, use, pauses and circuit breakers",
        "Show the model capacity a running scheduler holds calls to: per model its "
        "circuit breaker, what the current minute holds of each rate limit, a 429's pause "
        "and the calls that wait.",
        [gateway, as_json],
    )
    status.set_defaults(handler=_status)

    validate = _command(
        sub,
        "validate",
        "check a workflow without running it",
        "Check a workflow (a built-in name or a YAML file) and show its step graph, "
        "without running anything.",
        [as_json],
    )
    validate.add_argument("workflow", metavar="FILE_OR_NAME")
    validate.set_defaults(handler=_validate)

    personas = _command(
        sub,
        "personas",
        "list the personas workflows can use",
        "List the personas workflows can use, with their roles and deliverables.",
        [as_json],
    )
    personas.set_defaults(handler=_personas)

    completion = _command(
        sub,
        "completion",
        "print a shell completion script",
        "Print a completion script: `source <(maestro completion bash)` in ~/.bashrc, "
        "`source <(maestro completion zsh)` in ~/.zshrc, or "
        "`maestro completion fish | source` in fish's config.",
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    completion.set_defaults(handler=_completion)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _note(text: str) -> None:
    print(printable(text), file=sys.stderr, flush=True)


def configured_gateway(flag: str | None, env: Mapping[str, str]) -> tuple[str, str] | None:
    """`--gateway`, else MAESTRO_GATEWAY, checked, with where it came from; None when
    neither is set (the local stack).

    Raises:
        InputProblems: the address is not HOST:PORT.
    """
    for value, source in ((flag, "--gateway"), (env.get(GATEWAY_ENV), GATEWAY_ENV)):
        if value and value.strip():
            problem = gateway_problem(value, source)
            if problem:
                raise InputProblems([problem])
            return value.strip(), source
    return None


def _endpoint(args: argparse.Namespace) -> Endpoint | None:
    """The gateway configured for this command (None: the local one), with its token
    and TLS settings.

    Raises:
        InputProblems: a bad address.
        TargetError: an unreadable CA file.
    """
    args.endpoint = None  # for error messages
    configured = configured_gateway(args.gateway, os.environ)
    if configured is None:
        return None
    address, source = configured
    target = gateway_target(
        address, token=args.token, ca_file=args.ca_file, tls=args.tls, env=os.environ
    )
    endpoint = Endpoint(target, source)
    args.endpoint = endpoint
    return endpoint


def _mode(args: argparse.Namespace) -> Mode:
    if args.overwrite:
        return Mode.OVERWRITE
    return Mode.ADD if args.force else Mode.NEW


def _run(args: argparse.Namespace) -> int:
    """Checks every input first (nothing starts when one is wrong), then runs."""
    problems: list[str] = []
    requirement = args.requirement.strip()
    if problem := requirement_problem(requirement):
        problems.append(problem)
    choice: WorkflowChoice | None = None
    try:
        choice = resolve_workflow(args.workflow)
    except WorkflowError as err:
        problems += [f"workflow {args.workflow!r}: {p.field}: {p.reason}" for p in err.problems]
    if args.out is not None:
        if problem := out_problem(args.out):
            problems.append(problem)
        else:
            try:
                check_output(args.out, _mode(args))  # before the run, not after it
            except UnusableOutput as err:
                problems.append(str(err))
    endpoint: Endpoint | None = None
    try:
        endpoint = _endpoint(args)
    except InputProblems as err:
        problems += err.problems
    except TargetError as err:
        problems.append(str(err))
    if problem := provider_problem(args.provider, os.environ, local=endpoint is None):
        problems.append(problem)
    if args.interactive and (args.json or not sys.stdin.isatty()):
        problems.append("--interactive asks on a terminal: it needs a terminal on stdin, no --json")
    if problems or choice is None:
        raise InputProblems(problems, what="cannot start the run")
    if endpoint is None:
        running = running_stack_address(LOCAL_DATA_DIR)
        if running is not None:
            _note(f"using the local stack running in {LOCAL_DATA_DIR} (gateway {running})")
            target = GatewayTarget(running, token=read_local_token(LOCAL_DATA_DIR))
            endpoint = args.endpoint = Endpoint(target, "local")
    if endpoint is None:
        picked = choose_provider(args.provider, os.environ)
        if picked.notice:
            _note(picked.notice)
        if picked.provider == "anthropic":
            model = os.environ.get(ANTHROPIC_MODEL_ENV, "").strip() or DEFAULT_ANTHROPIC_MODEL
            _note(
                f"using the anthropic provider (model {model}, unless the workflow names "
                f"one; {ANTHROPIC_MODEL_ENV} changes it)"
            )
        provider = picked.provider
    else:
        # A remote gateway's workers have their own keys: this machine's environment
        # says nothing about them, so only an explicit --provider is sent.
        provider = args.provider or ""
    opts = RunOptions(
        workflow=choice,
        requirement=requirement,
        provider=provider,
        gateway=endpoint.target if endpoint is not None else None,
        out=args.out,
        mode=_mode(args),
        json=args.json,
        data_dir=LOCAL_DATA_DIR,
        plain=args.plain,
        color=args.color,
        interactive=args.interactive,
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
    if problem := provider_problem(args.provider, os.environ, local=True):
        raise UsageError(problem)
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
            _endpoint(args),
            page_size=args.page_size,
            page_token=args.page_token,
            as_json=args.json,
            waiting=args.waiting,
        )
    )


def _status(args: argparse.Namespace) -> int:
    return asyncio.run(commands.status(_endpoint(args), as_json=args.json))


def _runs_get(args: argparse.Namespace) -> int:
    return asyncio.run(commands.runs_get(_endpoint(args), args.run, as_json=args.json))


def _runs_approve(args: argparse.Namespace) -> int:
    return asyncio.run(
        commands.runs_decide(
            _endpoint(args),
            args.run,
            args.step,
            approve=True,
            comment=args.comment,
            as_json=args.json,
        )
    )


def _runs_reject(args: argparse.Namespace) -> int:
    return asyncio.run(
        commands.runs_decide(
            _endpoint(args),
            args.run,
            args.step,
            approve=False,
            comment=args.comment,
            as_json=args.json,
        )
    )


def _runs_cancel(args: argparse.Namespace) -> int:
    return asyncio.run(commands.runs_cancel(_endpoint(args), args.run, as_json=args.json))


def _runs_delete(args: argparse.Namespace) -> int:
    return asyncio.run(commands.runs_delete(_endpoint(args), args.run, as_json=args.json))


def _runs_events(args: argparse.Namespace) -> int:
    return asyncio.run(
        commands.runs_events(
            _endpoint(args),
            args.run,
            after=args.after,
            as_json=args.json,
            # Events read back are a log: one line each, even on a terminal.
            plain=True,
            color=args.color,
        )
    )


def _artifacts(args: argparse.Namespace) -> int:
    return asyncio.run(
        commands.artifacts_command(
            _endpoint(args),
            args.run,
            out=args.out,
            mode=_mode(args),
            as_json=args.json,
            all_versions=args.all_versions,
        )
    )


def _validate(args: argparse.Namespace) -> int:
    spec = load_workflow(args.workflow)
    if args.json:
        print(json_line({"valid": True, "workflow": spec.model_dump(mode="json")}))
    else:
        print(terminal_safe(format_workflow(spec)))
    return EXIT_OK


def _personas(args: argparse.Namespace) -> int:
    if args.json:
        print(json_line({"personas": [persona_to_dict(p) for p in PERSONAS.values()]}))
    else:
        print(terminal_safe(format_personas(PERSONAS.values())))
    return EXIT_OK


def _completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(build_parser(), args.shell))
    return EXIT_OK


def _where(args: argparse.Namespace) -> str:
    endpoint: Endpoint | None = getattr(args, "endpoint", None)
    if endpoint is None:
        return "the local gateway"
    if endpoint.source == "local":
        return f"the local stack's gateway at {endpoint.address}"
    return f"the gateway at {endpoint.address} (from {endpoint.source})"


def _unreachable_fix(args: argparse.Namespace) -> str:
    endpoint: Endpoint | None = getattr(args, "endpoint", None)
    if endpoint is not None and endpoint.source == GATEWAY_ENV:
        return (
            f"; if the `maestro up` that printed it has stopped, `unset {GATEWAY_ENV}` to "
            "use this directory's local stack, or start `maestro up` again"
        )
    if endpoint is not None and endpoint.source == "--gateway":
        return "; check the address, or leave --gateway out to use the local stack"
    return ""


def _report(err: BaseException, args: argparse.Namespace) -> int:
    """Prints one clear message for an error and returns its exit code."""
    if isinstance(err, InputProblems):
        if len(err.problems) == 1:
            _note(f"error: {err.problems[0]}")
        else:
            _note(f"error: {err.what}: {plural(len(err.problems), 'problem')}:")
            for line in err.problems:
                _note(f"  {line}")
        return EXIT_USAGE
    if isinstance(err, WorkflowError):
        _note(f"error: invalid workflow {args.workflow!r}:")
        for problem in err.problems:
            _note(f"  {problem.field}: {problem.reason}")
        if err.more:
            _note(f"  and {plural(err.more, 'more problem')}")
        return EXIT_USAGE
    if isinstance(err, UsageError | InvalidArgument | TargetError | UnusableOutput):
        _note(f"error: {err}")
        return EXIT_USAGE
    if isinstance(err, NoLocalData):
        _note(f"error: {err}")
        return EXIT_FAILED
    if isinstance(err, NoRunningStack):
        _note(f"error: {err}")
        return EXIT_UNREACHABLE
    if isinstance(err, Unauthenticated):
        _note(
            f"error: {_where(args)} refused the call ({err.message}); pass --token or set "
            "MAESTRO_TOKEN (`maestro up` writes the local stack's token to .maestro/token)"
        )
        return EXIT_UNREACHABLE
    if isinstance(err, Unavailable) and args.handler is not _db_upgrade:
        _note(f"error: cannot reach {_where(args)}: {err.message}{_unreachable_fix(args)}")
        return EXIT_UNREACHABLE
    if isinstance(err, DeadlineExceeded):
        _note(f"error: {_where(args)} did not answer in time ({err.message})")
        return EXIT_UNREACHABLE
    if isinstance(err, MaestroError):
        _note(f"error: {err.message}")
        return EXIT_FAILED
    _note(f"error: {err}")
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """Parses `argv` (default: sys.argv[1:]), runs the command, returns the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            # Report them against the subcommand they were given to, with its usage.
            chosen: argparse.ArgumentParser = args.parser
            chosen.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_:
        # argparse exits on --help/--version (0) and on bad usage (2).
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    handler: Handler | None = args.handler
    if handler is None:
        return _usage(parser)
    try:
        return handler(args)
    except KeyboardInterrupt:
        _note("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`maestro runs list | head`): not worth a traceback or
        # a message, but Python must not fail again flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except (
        InputProblems,
        UsageError,
        MaestroError,
        StackError,
        NoLocalData,
        NoRunningStack,
        CredentialsError,
        TargetError,
        BadPath,
        OSError,
    ) as err:
        return _report(err, args)


if __name__ == "__main__":
    sys.exit(main())

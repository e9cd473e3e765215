"""A local Maestro: every service as its own process on loopback.

`LocalStack` starts the sandbox, the persona worker, the scheduler(s) and the gateway
(in that order, each pointed at the ones before), waits until each one has written its
port file and answers a gRPC health check, and stops them in reverse order with SIGTERM (then
SIGKILL after a grace period). Tests use `stop_service`/`start_service` to restart
one service; a restarted service gets its previous port back, so the services that
point at it keep working.

The database is a SQLite file in the data directory unless a URL names another; the
stack brings its own SQLite file to the current schema, and on PostgreSQL it can run
several schedulers that share the work (`schedulers=N`).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maestro.cli.credentials import LOCAL_IDENTITY, CredentialsError, ensure_local_credentials
from maestro.cli.ports import LOOPBACK, free_port
from maestro.core.auth import SERVICE_CALLERS_ENV, SERVICE_TOKEN_ENV
from maestro.core.client import insecure_channel
from maestro.core.lifecycle import PARENT_PID_ENV
from maestro.core.settings import UMASK_ENV
from maestro.store import open_store
from maestro.store.schema_revision import SCHEMA_REVISION

log = logging.getLogger(__name__)

WORKER, SCHEDULER, GATEWAY = "persona_service", "scheduler", "gateway"
SANDBOX = "sandbox_service"
# Start order: each service needs the addresses of the ones before it.
SERVICES: tuple[str, ...] = (SANDBOX, WORKER, SCHEDULER, GATEWAY)
_ENV_PREFIX = {
    SANDBOX: "MAESTRO_SANDBOX_",
    WORKER: "MAESTRO_WORKER_",
    SCHEDULER: "MAESTRO_SCHEDULER_",
    GATEWAY: "MAESTRO_GATEWAY_",
}


def scheduler_name(index: int) -> str:
    """The service name of the index-th scheduler (0: `scheduler`, 1: `scheduler-2`, ...)."""
    return SCHEDULER if index == 0 else f"{SCHEDULER}-{index + 1}"


def _module(name: str) -> str:
    """The Python module a service name runs (`scheduler-2` runs `scheduler`)."""
    return SCHEDULER if name.startswith(f"{SCHEDULER}-") else name


_POLL_SECONDS = 0.02
_HEALTH_CALL_SECONDS = 2.0
_LOG_TAIL_LINES = 20


class StackError(RuntimeError):
    """A service of the local stack failed to start or to stop."""


@dataclass
class _Service:
    process: asyncio.subprocess.Process
    log_file: IO[bytes]
    port: int = 0
    metrics_port: int = 0


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return f"(cannot read {path}: {err})"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


def read_port(path: Path) -> int | None:
    """The port a service wrote to its port file, or None."""
    # The service writes the file atomically, but guard against an odd value anyway.
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def _lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Takes the data directory's lock, so two stacks never share one database.

    Two schedulers on one SQLite file would both re-drive the same unfinished runs.
    """
    lock = (data_dir / "stack.lock").open("ab")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StackError(
            f"another Maestro stack is already using {data_dir} (`maestro up` or "
            "`maestro run`); point this command at its gateway with --gateway or "
            "MAESTRO_GATEWAY, or wait for it to finish"
        ) from None
    return lock


def _upgrade_sqlite(path: Path) -> None:
    import sqlite3

    from maestro.store.migrate import upgrade

    if path.exists():
        conn = sqlite3.connect(path)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            revision = (
                conn.execute("SELECT version_num FROM alembic_version").fetchone()
                if "alembic_version" in tables
                else None
            )
        finally:
            conn.close()
        if revision is not None and revision[0] == SCHEMA_REVISION:
            return  # current: no need to load the migration machinery
        if "schema_version" in tables and "alembic_version" not in tables:
            aside = path.with_name(f"{path.name}.before-migrations")
            for suffix in ("", "-wal", "-shm"):
                old = Path(f"{path}{suffix}")
                if old.exists():
                    old.rename(Path(f"{aside}{suffix}"))
            log.warning(
                "%s was made by an earlier Maestro without migrations; moved it to %s "
                "and started a new database",
                path,
                aside,
            )
    upgrade(f"sqlite:///{path}")


def _without_secrets(env: dict[str, str]) -> dict[str, str]:
    """The sandbox's environment: it runs generated code, so the API key and the other
    services' settings stay out of its process too (its jail starts from nothing)."""
    return {
        key: value
        for key, value in env.items()
        if key != "ANTHROPIC_API_KEY"
        and (
            not key.startswith("MAESTRO_")
            or key.startswith(("MAESTRO_SANDBOX_", "MAESTRO_LOG_"))
            or key == PARENT_PID_ENV
        )
    }


def _kill(process: asyncio.subprocess.Process) -> None:
    with suppress(ProcessLookupError):
        process.kill()


class LocalStack:
    """Runs the Maestro services as child processes.

    Use as `async with LocalStack(data_dir) as stack:`; `stack.gateway_address` is
    then ready for calls.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        provider: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        gateway_port: int = 0,
        start_timeout: float = 30.0,
        stop_timeout: float = 20.0,
        database_url: str | None = None,
        schedulers: int = 1,
        read_only: bool = False,
    ) -> None:
        """Prepares the stack; nothing starts before `__aenter__` (or `start`).

        Args:
            data_dir: Holds the SQLite database (unless `database_url` names another),
                the port files and `logs/`.
            provider: `offline` or `anthropic` for the persona worker; None leaves
                the worker's own default (anthropic when ANTHROPIC_API_KEY is set).
            extra_env: Applied last, over os.environ and the stack's own settings.
            gateway_port: The gateway's port; 0 picks a free one.
            start_timeout: Seconds each service gets to become healthy.
            stop_timeout: Seconds each service gets to exit after SIGTERM.
            database_url: `postgresql://...` (or another SQLite file); the default is
                `DATA_DIR/maestro.db`. A PostgreSQL database must be upgraded first
                (`maestro db upgrade`); the stack upgrades SQLite files itself.
            schedulers: How many schedulers to run; more than one needs PostgreSQL.
            read_only: Start the gateway alone, to read the database (runs, events,
                artifacts) without driving anything: no scheduler, no worker, and
                neither the data directory's lock nor a migration is taken.

        Raises:
            StackError: several schedulers on SQLite.
        """
        self.data_dir = data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.database_path = self.data_dir / "maestro.db"
        self.database_url = database_url or f"sqlite:///{self.database_path}"
        self.is_sqlite = self.database_url.startswith("sqlite:///")
        if schedulers < 1:
            raise StackError("schedulers must be at least 1")
        if schedulers > 1 and self.is_sqlite:
            raise StackError(
                "several schedulers need PostgreSQL (a SQLite file has one writer); "
                "pass --database-url postgresql://..."
            )
        self.scheduler_names = tuple(scheduler_name(i) for i in range(schedulers))
        self.services = (SANDBOX, WORKER, *self.scheduler_names, GATEWAY)
        self.read_only = read_only
        if read_only:
            self.services = (GATEWAY,)
        self.provider = provider
        self.extra_env = dict(extra_env or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._ports: dict[str, int] = {GATEWAY: gateway_port}
        self._running: dict[str, _Service] = {}
        self._lock: IO[bytes] | None = None

    async def __aenter__(self) -> LocalStack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def address(self, name: str) -> str:
        """`127.0.0.1:PORT` of a service that has started at least once."""
        port = self._ports.get(name, 0)
        if not port:
            raise StackError(f"{name} has not started")
        return f"{LOOPBACK}:{port}"

    def scheduler_target(self) -> str:
        """The gRPC target of every scheduler (round-robin over them when several)."""
        if self.read_only:
            # Nothing listens there: the gateway answers reads from the database, and
            # calls that need a scheduler fail fast with UNAVAILABLE.
            return f"{LOOPBACK}:1"
        if len(self.scheduler_names) == 1:
            return self.address(SCHEDULER)
        return "ipv4:" + ",".join(self.address(name) for name in self.scheduler_names)

    @property
    def gateway_address(self) -> str:
        """`127.0.0.1:PORT` of the gateway."""
        return self.address(GATEWAY)

    def _stem(self, name: str) -> str:
        # A read-only gateway shares the directory with any stack that starts meanwhile:
        # its files must never be taken for (or remove) that stack's.
        return f"{name}-reader-{os.getpid()}" if self.read_only else name

    def _port_file(self, name: str) -> Path:
        return self.data_dir / f"{self._stem(name)}.port"

    def log_path(self, name: str) -> Path:
        """A service's log (JSON lines), rotated by size (MAESTRO_LOG_MAX_BYTES)."""
        return self.log_dir / (f"{name}-reader.log" if self.read_only else f"{name}.log")

    def output_path(self, name: str) -> Path:
        """Where a service's stdout and stderr go: what bypasses its log, such as a
        crash's traceback, a refusal to start, or gRPC's own warnings."""
        return self.log_dir / (f"{name}-reader.out" if self.read_only else f"{name}.out")

    def _metrics_port_file(self, name: str) -> Path:
        return self.data_dir / f"{self._stem(name)}.metrics-port"

    def metrics_url(self, name: str) -> str:
        """`http://127.0.0.1:PORT/metrics` of a running service's Prometheus metrics."""
        service = self._running.get(name)
        if service is None or not service.metrics_port:
            raise StackError(f"{name} is not running")
        return f"http://{LOOPBACK}:{service.metrics_port}/metrics"

    @property
    def metrics_urls(self) -> dict[str, str]:
        """The metrics endpoint of every running service, by service name."""
        return {name: self.metrics_url(name) for name in self.services if name in self._running}

    def pid(self, name: str) -> int | None:
        """The process id of a running service, or None."""
        service = self._running.get(name)
        return service.process.pid if service is not None else None

    async def kill_service(self, name: str) -> int | None:
        """Kills one service with SIGKILL (a crash, for fault tests) and reaps it.

        Returns:
            Its exit code, or None if it was not running.
        """
        service = self._running.pop(name, None)
        if service is None:
            return None
        try:
            _kill(service.process)
            await service.process.wait()
        finally:
            service.log_file.close()
        await asyncio.to_thread(self._port_file(name).unlink, missing_ok=True)
        await asyncio.to_thread(self._metrics_port_file(name).unlink, missing_ok=True)
        return service.process.returncode

    def is_running(self, name: str) -> bool:
        """Whether the service's process is alive as far as this stack knows."""
        service = self._running.get(name)
        return service is not None and service.process.returncode is None

    async def unfinished_runs(self) -> list[str]:
        """Ids of the runs in this stack's database that its scheduler will re-drive.

        Takes the data directory's lock first (kept for start()), so the runs of a
        stack that is running now are never taken for left-overs.

        Raises:
            StackError: another stack uses this data directory.
        """
        await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
        if self._lock is None:
            self._lock = await asyncio.to_thread(_lock_data_dir, self.data_dir)
        if self.is_sqlite and not await asyncio.to_thread(self.database_path.exists):
            return []
        await self.prepare_database()
        store = await open_store(self.database_url)
        try:
            return await store.unfinished_run_ids()
        finally:
            await store.close()

    async def wait_for_exit(self) -> tuple[str, int | None]:
        """Waits until any running service exits (for `maestro up` to notice a crash).

        Returns:
            The service's name and exit code.

        Raises:
            StackError: nothing is running.
        """
        waiters = {
            asyncio.ensure_future(service.process.wait()): name
            for name, service in self._running.items()
        }
        if not waiters:
            raise StackError("no service is running")
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        first = done.pop()
        return waiters[first], first.result()

    async def prepare_database(self) -> None:
        """Brings the stack's own SQLite file to the current schema (a file made before
        migrations existed is moved aside, with a note). PostgreSQL is left alone: it is
        upgraded on purpose, with `maestro db upgrade`."""
        if not self.is_sqlite:
            return
        await asyncio.to_thread(_upgrade_sqlite, self.database_path)

    async def start(self) -> None:
        """Starts every service in order; on failure, stops those already started.

        Raises:
            StackError: another stack uses this data directory, or a service failed
                to start.
        """
        await asyncio.to_thread(self.log_dir.mkdir, parents=True, exist_ok=True)
        if self._lock is None and not self.read_only:
            self._lock = await asyncio.to_thread(_lock_data_dir, self.data_dir)
        try:
            if not self.read_only:
                await self.prepare_database()
            # Every address is known before anything starts, so the services start side
            # by side instead of each waiting for the one before it to be healthy.
            for name in self.services:
                if not self._ports.get(name):
                    self._ports[name] = await asyncio.to_thread(free_port)
            results = await asyncio.gather(
                *(self.start_service(name) for name in self.services), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise failures[0]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stops every running service, the gateway first, and releases the data dir."""
        try:
            for name in reversed(self.services):
                if name in self._running:
                    await self.stop_service(name)
        except BaseException:
            # Interrupted while stopping: the rest run in their own sessions, and
            # nothing else would ever stop them.
            for service in self._running.values():
                _kill(service.process)
                service.log_file.close()
            self._running.clear()
            raise
        finally:
            if self._lock is not None:
                self._lock.close()  # closing the descriptor releases the flock
                self._lock = None

    def _env(self, name: str, port_file: Path) -> dict[str, str]:
        prefix = _ENV_PREFIX[_module(name)]
        env = dict(os.environ)
        # Each service presents its own token and answers only the callers it should
        # (maestro.cli.credentials.CALLERS); the gateway takes the local user's token.
        try:
            credentials = ensure_local_credentials(self.data_dir)
        except CredentialsError as err:
            raise StackError(str(err)) from None
        # What the services write in the data directory is for this user alone.
        env[UMASK_ENV] = "077"
        # Identities are per kind of service: every scheduler of a stack is `scheduler`.
        env[SERVICE_TOKEN_ENV] = credentials.service_token(_module(name))
        env[SERVICE_CALLERS_ENV] = credentials.callers_of(_module(name))
        if name == GATEWAY:
            env["MAESTRO_GATEWAY_TOKENS_FILE"] = str(credentials.tokens_file)
            env["MAESTRO_GATEWAY_ADMIN_IDENTITIES"] = LOCAL_IDENTITY
        env.update(
            {
                f"{prefix}HOST": LOOPBACK,
                # A restarted service takes its old port back: the next service in
                # the chain was configured with that address.
                f"{prefix}PORT": str(self._ports.get(name, 0)),
                f"{prefix}PORT_FILE": str(port_file),
                # Every local service serves its metrics on a free loopback port.
                f"{prefix}METRICS_PORT": "0",
                f"{prefix}METRICS_PORT_FILE": str(self._metrics_port_file(name)),
                f"{prefix}LOG_FILE": str(self.log_path(name)),
                # The services live in their own session (so a terminal's Ctrl-C
                # reaches only us); this makes them exit if we die without stopping them.
                PARENT_PID_ENV: str(os.getpid()),
            }
        )
        if name == WORKER:
            env["MAESTRO_WORKER_SANDBOX_ADDRESS"] = self.address(SANDBOX)
            if self.provider:
                env["MAESTRO_WORKER_PROVIDER"] = self.provider
        if _module(name) == SCHEDULER:
            env["MAESTRO_SCHEDULER_DATABASE"] = self.database_url
            env["MAESTRO_SCHEDULER_WORKER_ADDRESS"] = self.address(WORKER)
            env["MAESTRO_SCHEDULER_SANDBOX_ADDRESS"] = self.address(SANDBOX)
            if self.provider:
                # Model rate limits apply to the anthropic provider's calls only.
                env["MAESTRO_SCHEDULER_WORKER_PROVIDER"] = self.provider
        if name == GATEWAY:
            env["MAESTRO_GATEWAY_DATABASE"] = self.database_url
            env["MAESTRO_GATEWAY_SCHEDULER_ADDRESS"] = self.scheduler_target()
        env.update(self.extra_env)
        if name == SANDBOX:
            # It answers the scheduler and workers, and calls nobody: it keeps only the
            # hashes of its callers' tokens.
            clean = _without_secrets(env)
            clean[SERVICE_CALLERS_ENV] = env[SERVICE_CALLERS_ENV]
            return clean
        # The API key goes to persona workers only: no other service calls the API.
        if name != WORKER:
            for secret in ("ANTHROPIC_API_KEY", "MAESTRO_WORKER_ANTHROPIC_API_KEY"):
                env.pop(secret, None)
        return env

    async def start_service(self, name: str) -> None:
        """Starts one service and waits until it is healthy.

        Raises:
            StackError: it exited early, never wrote its port file, or never reported
                SERVING within `start_timeout`; the message ends with its last log lines.
        """
        if name not in self.services:
            raise StackError(
                f"unknown service {name!r}; expected one of {', '.join(self.services)}"
            )
        if self.is_running(name):
            raise StackError(f"{name} is already running")
        port_file = self._port_file(name)
        await asyncio.to_thread(port_file.unlink, missing_ok=True)
        log_path = self.log_path(name)
        await asyncio.to_thread(self._metrics_port_file(name).unlink, missing_ok=True)
        log_file: IO[bytes] = await asyncio.to_thread(self.output_path(name).open, "ab")
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                _module(name),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=self._env(name, port_file),
                cwd=self.data_dir,
                # Own session: a Ctrl-C in the terminal reaches only the CLI, which
                # still needs the services to cancel the run before stopping them.
                start_new_session=True,
            )
        except BaseException:
            log_file.close()
            raise
        service = _Service(process=process, log_file=log_file)
        self._running[name] = service
        log.info("started %s (pid %s), logging to %s", name, process.pid, log_path)
        try:
            service.port = await self._wait_until_serving(name, process, port_file)
        except BaseException:
            await self.stop_service(name)
            raise
        self._ports[name] = service.port
        # Written before the gRPC port file, so it is there once the service serves.
        metrics_port = await asyncio.to_thread(read_port, self._metrics_port_file(name))
        service.metrics_port = metrics_port or 0

    async def _wait_until_serving(
        self, name: str, process: asyncio.subprocess.Process, port_file: Path
    ) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        port: int | None = None
        last_problem = "no port file yet"
        while True:
            if process.returncode is not None:
                raise await self._start_error(
                    name, f"exited with code {process.returncode} while starting"
                )
            if port is None:
                port = await asyncio.to_thread(read_port, port_file)
            if port is not None:
                last_problem = await self._health_problem(port)
                if not last_problem:
                    return port
            if loop.time() >= deadline:
                raise await self._start_error(
                    name, f"was not serving after {self.start_timeout:g}s ({last_problem})"
                )
            await asyncio.sleep(_POLL_SECONDS)

    async def _health_problem(self, port: int) -> str:
        """Empty when the service reports SERVING; otherwise what is wrong."""
        channel = insecure_channel(f"{LOOPBACK}:{port}")
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            response: health_pb2.HealthCheckResponse = await stub.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=_HEALTH_CALL_SECONDS
            )
        except grpc.aio.AioRpcError as err:
            return f"health check: {err.code().name} {err.details() or ''}".rstrip()
        finally:
            await channel.close(None)
        status = health_pb2.HealthCheckResponse
        if response.status != status.SERVING:
            return f"health status {status.ServingStatus.Name(response.status)}"
        return ""

    async def _start_error(self, name: str, what: str) -> StackError:
        output = await asyncio.to_thread(_tail, self.output_path(name))
        tail = await asyncio.to_thread(_tail, self.log_path(name))
        return StackError(
            f"{name} {what}; its log is {self.log_path(name)}. Last lines:\n{tail}\n"
            f"Its output ({self.output_path(name)}):\n{output}"
        )

    async def stop_service(self, name: str) -> int | None:
        """Stops one service: SIGTERM, up to `stop_timeout` seconds, then SIGKILL.

        Returns:
            Its exit code (0 after a graceful shutdown), or None if it was not running.
        """
        service = self._running.pop(name, None)
        if service is None:
            return None
        process = service.process
        try:
            if process.returncode is None:
                # It may exit between the check and the signal; wait() still reaps it.
                with suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), self.stop_timeout)
                except TimeoutError:
                    log.warning("%s ignored SIGTERM for %gs; killing it", name, self.stop_timeout)
                    _kill(process)
                    await process.wait()
                except asyncio.CancelledError:
                    # The child runs in its own session: nothing else would stop it.
                    _kill(process)
                    raise
        finally:
            service.log_file.close()
        # A stale port file would let the next start believe the service is up.
        await asyncio.to_thread(self._port_file(name).unlink, missing_ok=True)
        await asyncio.to_thread(self._metrics_port_file(name).unlink, missing_ok=True)
        code = process.returncode
        if code != 0:
            log.warning("%s exited with code %s; see %s", name, code, self.log_path(name))
        return code

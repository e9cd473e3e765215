"""Local stacks for the bench, on SQLite or on PostgreSQL, and what they run on.

A stack is `maestro.cli.stack.LocalStack` (worker, scheduler, gateway as processes),
told which database to use through settings only: MAESTRO_DATABASE_URL (issue 5's
one setting) and the services' own MAESTRO_<SERVICE>_DATABASE, so the same harness
measures today's store and its successor. Every stack runs with the bench provider
enabled and 100 steps in flight per run.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from bench import procs
from maestro.api.gateway.v1 import gateway_pb2_grpc
from maestro.cli.credentials import read_local_token
from maestro.cli.stack import SERVICES, LocalStack
from maestro.core.client import insecure_channel
from maestro.core.errors import MaestroError
from maestro.store import open_store

if TYPE_CHECKING:
    from bench.client import Stub

SQLITE, POSTGRESQL = "sqlite", "postgresql"
BENCH_CLIENT = "bench client"

BENCH_ENV: dict[str, str] = {
    "MAESTRO_WORKER_ENABLE_BENCH_PROVIDER": "true",
    "MAESTRO_SCHEDULER_MAX_PARALLEL_STEPS": "100",
    # The scheduler-wide cap of issue 5's admission (ignored by a scheduler without it).
    "MAESTRO_SCHEDULER_MAX_STEPS_IN_FLIGHT": "100",
    "MAESTRO_LOG_LEVEL": "WARNING",
    # One bench client is one identity: the per-identity limits of the public API would
    # refuse its 500 idle streams and its bursts of CreateRun (they are measured apart).
    "MAESTRO_GATEWAY_MAX_STREAMS_PER_CLIENT": "2000",
    "MAESTRO_GATEWAY_RATE_LIMIT_PER_SECOND": "100000",
    "MAESTRO_GATEWAY_RATE_LIMIT_BURST": "100000",
}
"""Applied to every bench stack. WARNING: the services' INFO lines per step would
otherwise be a measurable part of the work (the log files go to the work dir)."""


class BackendUnsupported(RuntimeError):
    """This commit's store cannot use the backend (the reason is the message)."""


@dataclass(frozen=True)
class Backend:
    """A database kind, and for PostgreSQL the server the bench creates databases on."""

    name: str
    server_url: str = ""
    """postgresql://USER@HOST:PORT/DB of a database to connect to for CREATE DATABASE."""


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _admin(server_url: str, sql: str) -> None:
    """Runs one statement (CREATE/DROP DATABASE) on the server, outside a transaction."""
    import psycopg

    try:
        async with await psycopg.AsyncConnection.connect(
            server_url, autocommit=True, connect_timeout=10
        ) as conn:
            await conn.execute(sql.encode())
    except psycopg.Error as err:
        raise RuntimeError(f"PostgreSQL at {server_url}: {sql!r} failed: {err}") from err


async def _upgrade_if_the_store_can(url: str) -> None:
    """Migrates a fresh database with `maestro.store.migrate.upgrade` (issue 5) when this
    commit has it; an older store is left to refuse the URL in `_check_store_accepts`."""
    try:
        from maestro.store.migrate import upgrade
    except ImportError:
        return
    try:
        await asyncio.to_thread(upgrade, url)
    except Exception as err:  # Alembic, the driver: any of them means no PostgreSQL here
        raise BackendUnsupported(f"migrating {url} failed: {err}") from err


async def _check_store_accepts(url: str) -> None:
    try:
        store = await open_store(url)
    except MaestroError as err:
        raise BackendUnsupported(err.message) from None
    await store.close()


@asynccontextmanager
async def database(backend: Backend, label: str, data_dir: Path) -> AsyncIterator[str]:
    """A fresh, empty database for one stack; yields its URL and drops it afterwards.

    `data_dir` must be absolute (the SQLite file lives in it).

    Raises:
        BackendUnsupported: this commit's store does not take this backend.
    """
    if backend.name == SQLITE:
        yield f"sqlite:///{data_dir / 'maestro.db'}"
        return
    name = f"maestro_bench_{label}_{os.getpid()}".replace("-", "_")
    await _admin(backend.server_url, f"DROP DATABASE IF EXISTS {name}")
    await _admin(backend.server_url, f"CREATE DATABASE {name}")
    url = _with_database(backend.server_url, name)
    try:
        await _upgrade_if_the_store_can(url)
        await _check_store_accepts(url)
        yield url
    finally:
        await _admin(backend.server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class TimedStack(LocalStack):
    """A LocalStack that records how long each service took to become healthy."""

    def __init__(
        self, data_dir: Path, *, provider: str, env: Mapping[str, str], **options: Any
    ) -> None:
        super().__init__(data_dir, provider=provider, extra_env=env, **options)
        self.start_seconds: dict[str, float] = {}

    async def start_service(self, name: str) -> None:
        """Starts one service like LocalStack does, timing it until it is healthy."""
        began = time.perf_counter()
        await super().start_service(name)
        self.start_seconds[name] = time.perf_counter() - began

    def pids(self) -> dict[str, int]:
        """Each running service's process id (LocalStack's private table, read only)."""
        return {name: self._running[name].process.pid for name in SERVICES}


def make_stack(
    data_dir: Path,
    url: str,
    *,
    provider: str = "offline",
    extra_env: Mapping[str, str] | None = None,
    schedulers: int = 1,
) -> TimedStack:
    """A bench stack on the database `url` (with `schedulers` schedulers); nothing starts yet."""
    env = {
        **BENCH_ENV,
        "MAESTRO_DATABASE_URL": url,
        "MAESTRO_SCHEDULER_DATABASE": url,
        "MAESTRO_GATEWAY_DATABASE": url,
        **(extra_env or {}),
    }
    # A LocalStack that learns to take the URL itself (issue 5) gets it that way too.
    options: dict[str, Any] = {"database_url": url} if _takes_database_url() else {}
    if schedulers != 1:
        options["schedulers"] = schedulers
    return TimedStack(data_dir, provider=provider, env=env, **options)


def _takes_database_url() -> bool:
    return "database_url" in inspect.signature(LocalStack.__init__).parameters


@asynccontextmanager
async def open_stack(
    data_dir: Path,
    url: str,
    *,
    provider: str = "offline",
    extra_env: Mapping[str, str] | None = None,
    schedulers: int = 1,
) -> AsyncIterator[tuple[TimedStack, Stub]]:
    """Starts a stack and a gateway client; stops both on the way out.

    Raises:
        RuntimeError: a PostgreSQL stack left a SQLite file behind (it ignored the URL).
    """
    stack = make_stack(data_dir, url, provider=provider, extra_env=extra_env, schedulers=schedulers)
    async with stack:
        # The gateway needs a token: the stack's own, as the CLI uses it.
        channel = insecure_channel(stack.gateway_address, token=read_local_token(stack.data_dir))
        try:
            yield stack, gateway_pb2_grpc.MaestroServiceStub(channel)
        finally:
            await channel.close(None)
    stray = data_dir / "maestro.db"
    if not url.startswith("sqlite:") and stray.exists():
        raise RuntimeError(f"the stack was given {url} but wrote {stray}")


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each service and by this bench process."""
    snapshot = {name: procs.read_cpu_seconds(pid) for name, pid in pids.items()}
    snapshot[BENCH_CLIENT] = time.process_time()
    return snapshot


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds used between two snapshots, per process."""
    return {name: after[name] - before[name] for name in before}


def memory_of(pids: Mapping[str, int]) -> dict[str, procs.Memory]:
    """VmRSS and VmHWM of each service."""
    return {name: procs.read_memory(pid) for name, pid in pids.items()}


def describe(value: Any) -> str:
    """The first line of an exception's message, for a table cell."""
    text = str(value).strip().splitlines()
    return text[0] if text else type(value).__name__

"""e2e fixtures: every Maestro service as its own process, over real gRPC and SQLite.

Only the Anthropic HTTP API is faked (tests/fakes/anthropic_server.py), and it is
reached through the real SDK inside the real persona worker process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from maestro.api.gateway.v1 import gateway_pb2_grpc
from maestro.cli.stack import LocalStack
from tests.e2e.channels import gateway_channel
from tests.fakes.anthropic_server import FakeAnthropic


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


# Waits that are minutes in production, shortened so the suite stays quick.
FAST_RETRIES = {
    "MAESTRO_SCHEDULER_OVERLOAD_RETRY_INITIAL_SECONDS": "0.5",
    "MAESTRO_SCHEDULER_OVERLOAD_RETRY_MAX_SECONDS": "1",
    # A stopping scheduler waits this long for attempts in flight before handing back.
    "MAESTRO_SCHEDULER_DRAIN_SECONDS": "1",
}


@pytest.fixture
async def offline_stack(tmp_path: Path, database_url: str) -> AsyncIterator[LocalStack]:
    """Every service as a process, on the test's backend (SQLite, then PostgreSQL)."""
    async with LocalStack(
        tmp_path / "stack", provider="offline", database_url=database_url, extra_env=FAST_RETRIES
    ) as stack:
        yield stack


@pytest.fixture
async def anthropic_stack(
    tmp_path: Path, fake_anthropic: FakeAnthropic, database_url: str
) -> AsyncIterator[LocalStack]:
    env = {
        "ANTHROPIC_API_KEY": "test-key",
        "MAESTRO_WORKER_ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "MAESTRO_WORKER_HEARTBEAT_INTERVAL_SECONDS": "0.2",
        **FAST_RETRIES,
        # Overload's own backoff hint (30 s by default) would only slow the tests down.
        "MAESTRO_WORKER_OVERLOAD_RETRY_AFTER_SECONDS": "0",
    }
    async with LocalStack(
        tmp_path / "stack", provider="anthropic", extra_env=env, database_url=database_url
    ) as stack:
        yield stack


@pytest.fixture
async def gateway(
    offline_stack: LocalStack,
) -> AsyncIterator[gateway_pb2_grpc.MaestroServiceAsyncStub]:
    channel = gateway_channel(offline_stack)
    yield gateway_pb2_grpc.MaestroServiceStub(channel)
    await channel.close(None)


@pytest.fixture
async def anthropic_gateway(
    anthropic_stack: LocalStack,
) -> AsyncIterator[gateway_pb2_grpc.MaestroServiceAsyncStub]:
    channel = gateway_channel(anthropic_stack)
    yield gateway_pb2_grpc.MaestroServiceStub(channel)
    await channel.close(None)

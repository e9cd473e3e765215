"""Per-client request rate and concurrent streams, so no one client can starve the rest.

A client is its authenticated identity, or its peer address before authentication.
Each has a token bucket (a sustained rate and a burst) and a cap on open streams;
past either, calls are answered RESOURCE_EXHAUSTED with a RetryInfo of when to retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from maestro.core.errors import ResourceExhausted

# Buckets kept at most; past it, idle full buckets are forgotten (they hold nothing).
_MAX_CLIENTS = 10_000


@dataclass(frozen=True)
class LimitSettings:
    """Attributes: requests_per_second: sustained rate; burst: calls allowed at once
    after a quiet spell; max_streams: open streaming calls per client."""

    requests_per_second: float
    burst: int
    max_streams: int


@dataclass
class _Client:
    tokens: float
    updated: float
    streams: int = 0


class ClientLimits:
    """The limits of one server, shared by all its calls (one event loop: no locks)."""

    def __init__(
        self, settings: LimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._clients: dict[str, _Client] = {}

    def _client(self, key: str, now: float) -> _Client:
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= _MAX_CLIENTS:
                self._forget_idle(now)
            client = _Client(tokens=float(self.settings.burst), updated=now)
            self._clients[key] = client
        return client

    def _forget_idle(self, now: float) -> None:
        rate, burst = self.settings.requests_per_second, self.settings.burst
        for key, client in list(self._clients.items()):
            if not client.streams and client.tokens + (now - client.updated) * rate >= burst:
                del self._clients[key]

    def admit(self, key: str) -> None:
        """Takes one request from the client's bucket.

        Raises:
            ResourceExhausted: the bucket is empty; retry_after says when one is back.
        """
        now = self._clock()
        client = self._client(key, now)
        rate = self.settings.requests_per_second
        client.tokens = min(
            float(self.settings.burst), client.tokens + (now - client.updated) * rate
        )
        client.updated = now
        if client.tokens < 1.0:
            wait = (1.0 - client.tokens) / rate
            raise ResourceExhausted(
                f"too many requests from {key}: at most {rate:g} per second "
                f"(bursts of {self.settings.burst}); retry in {wait:.2f}s",
                retry_after=wait,
                error_reason="RATE_LIMITED",
            )
        client.tokens -= 1.0

    @contextmanager
    def stream(self, key: str) -> Iterator[None]:
        """Holds one of the client's stream slots while the block runs.

        Raises:
            ResourceExhausted: the client has max_streams open already.
        """
        client = self._client(key, self._clock())
        if client.streams >= self.settings.max_streams:
            raise ResourceExhausted(
                f"{key} has {client.streams} streams open, the most allowed; close one "
                "or retry later",
                retry_after=1.0,
                error_reason="TOO_MANY_STREAMS",
            )
        client.streams += 1
        try:
            yield
        finally:
            client.streams -= 1

"""The local stack's ports: chosen where the kernel never hands one out, never twice."""

from __future__ import annotations

import socket

import grpc
import pytest

from maestro.cli import ports
from maestro.core.client import server_options


def test_ports_are_below_the_ephemeral_range_free_and_never_repeated() -> None:
    low = ports._ephemeral_low()
    chosen = [ports.free_port() for _ in range(50)]
    assert len(set(chosen)) == len(chosen)
    for port in chosen:
        assert ports._LOWEST_CHOSEN_PORT <= port < low
        with socket.socket() as listener:
            listener.bind((ports.LOOPBACK, port))  # free when handed out


def test_a_port_with_a_listener_is_never_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    taken, free = ports.free_port(), ports.free_port()
    with socket.socket() as listener:
        listener.bind((ports.LOOPBACK, taken))
        listener.listen()
        ports._handed_out.difference_update({taken, free})
        # The random choices land on the taken port twice, then on a free one.
        picks = iter([taken, taken, free])
        monkeypatch.setattr("maestro.cli.ports.random.choice", lambda _: next(picks))
        assert ports.free_port() == free


def test_too_few_ports_below_the_ephemeral_range_fall_back_to_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "_ephemeral_low", lambda: ports._LOWEST_CHOSEN_PORT + 10)
    assert ports.free_port() > 0


async def test_a_second_server_cannot_share_a_port() -> None:
    # gRPC's default SO_REUSEPORT would let both bind and split the calls between them.
    first = grpc.aio.server(options=server_options())
    port = first.add_insecure_port(f"{ports.LOOPBACK}:0")
    await first.start()
    try:
        second = grpc.aio.server(options=server_options())
        with pytest.raises(RuntimeError):
            second.add_insecure_port(f"{ports.LOOPBACK}:{port}")
    finally:
        await first.stop(None)

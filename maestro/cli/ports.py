"""Ports for the local stack's services, chosen where nothing else will take them.

The stack chooses every port before any service starts (so they start side by side),
and a restarted service binds its old port again. A port the kernel could hand out
meanwhile, for an outgoing connection or another bind to port 0, can be gone by
then: a CI run once lost a scheduler's port that way ("Address already in use").
The kernel hands out only ports in its ephemeral range, so ports are chosen below it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_DEFAULT_EPHEMERAL_LOW = 32768
# Below this are the ports of well-known servers (PostgreSQL, Redis, brokers...).
_LOWEST_CHOSEN_PORT = 20000
# Fewer candidates than this, and a random choice would collide too often.
_MIN_CANDIDATES = 1000
_TRIES = 200

# Never handed out twice by one process: a stopped service's port stays its own.
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE_FILE.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def _is_free(port: int) -> bool:
    # No SO_REUSEADDR: a port with a listener (on any address) or a connection
    # lingering in TIME_WAIT is refused, which is stricter than the service's bind.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _kernel_chosen_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def free_port() -> int:
    """A loopback port free now that the kernel will not hand to anyone else.

    Falls back to a port the kernel chooses when its ephemeral range leaves too few
    ports below it (a machine configured that way keeps the old, small race).
    """
    candidates = range(_LOWEST_CHOSEN_PORT, _ephemeral_low())
    if len(candidates) >= _MIN_CANDIDATES:
        for _ in range(_TRIES):
            port = random.choice(candidates)
            if port not in _handed_out and _is_free(port):
                _handed_out.add(port)
                return port
    return _kernel_chosen_port()

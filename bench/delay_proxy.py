"""A TCP proxy that delays every chunk by a fixed time each way: a slower network link.

`python -m bench.delay_proxy LISTEN_PORT UPSTREAM_PORT ONE_WAY_MICROSECONDS` forwards
127.0.0.1:LISTEN_PORT to 127.0.0.1:UPSTREAM_PORT. The kernel's own delay (tc netem) is
not available in every container; this one needs nothing. Each direction of each
connection has a reader thread that stamps what it reads and a writer thread that sends
it once its time has come, so a delay never adds up behind the traffic before it.
"""

from __future__ import annotations

import queue
import socket
import sys
import threading
import time


def _forward(source: socket.socket, target: socket.socket, delay: float) -> None:
    chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def read() -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            chunks.put((time.perf_counter() + delay, data))
            if not data:
                return

    def write() -> None:
        while True:
            due, data = chunks.get()
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    return
                target.sendall(data)
            except OSError:
                return

    threading.Thread(target=read, daemon=True).start()
    threading.Thread(target=write, daemon=True).start()


def serve(listen_port: int, upstream_port: int, one_way_seconds: float) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(512)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", upstream_port), timeout=10)
        upstream.settimeout(None)
        for end in (client, upstream):
            end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _forward(client, upstream, one_way_seconds)
        _forward(upstream, client, one_way_seconds)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1_000_000)

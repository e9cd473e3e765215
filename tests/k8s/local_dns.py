"""A tiny DNS server on loopback that answers for a cluster's Service names.

gRPC's `dns://SERVER/NAME:PORT` target form sends the lookup of NAME to SERVER, so a
client keeps its manifest's target (`dns:///maestro-worker-code:50051`) with only the
server named: the answer is the pods' addresses, as a headless Service's is. A queries
get every address of the name; AAAA queries get an empty answer; other names NXDOMAIN.
Standard library only (RFC 1035 wire format, UDP).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import cast

_TYPE_A = 1
_CLASS_IN = 1
_NXDOMAIN = 3


def _question(packet: bytes) -> tuple[str, int, int]:
    """(name, qtype, end of the question) of a query's first question."""
    labels = []
    offset = 12
    while packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii").lower())
        offset += 1 + length
    qtype, _ = struct.unpack("!HH", packet[offset + 1 : offset + 5])
    return ".".join(labels), qtype, offset + 5


@dataclass
class LocalDns(asyncio.DatagramProtocol):
    """Answers A queries from `records` (name -> addresses); `queries` counts lookups."""

    records: dict[str, list[str]] = field(default_factory=dict)
    queries: int = 0
    transport: asyncio.DatagramTransport | None = None
    port: int = 0

    async def start(self) -> LocalDns:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(data) < 17 or self.transport is None:
            return
        self.queries += 1
        ident, flags = struct.unpack("!HH", data[:4])
        name, qtype, end = _question(data)
        addresses = self.records.get(name.rstrip("."))
        rcode = 0 if addresses is not None else _NXDOMAIN
        answers = b""
        count = 0
        if addresses and qtype == _TYPE_A:
            for address in addresses:
                rdata = bytes(int(part) for part in address.split("."))
                # A pointer to the question's name (offset 12), type A, class IN, TTL 5.
                answers += struct.pack("!HHHIH", 0xC00C, _TYPE_A, _CLASS_IN, 5, 4) + rdata
                count += 1
        reply_flags = 0x8000 | (flags & 0x0100) | 0x0400 | rcode  # response, RD, AA
        header = struct.pack("!HHHHHH", ident, reply_flags, 1, count, 0, 0)
        self.transport.sendto(header + data[12:end] + answers, addr)

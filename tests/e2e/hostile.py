"""Hostile requests generated from protos/ alone: the client side knows only the
descriptors protoc makes of the .proto files, none of Maestro's Python types.

Each string field gets values from the classes of input that once broke Maestro
(YAML constructor errors, lone-surrogate escapes, quadratic "did you mean", huge
timeouts and step counts, names with a trailing newline, page tokens of nested JSON,
oversized messages) mixed with arbitrary text; numbers get their type's extremes;
and raw bytes (truncated varints, wrong wire types, invalid UTF-8) test decoding.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import strategies as st

PROTOS = Path(__file__).resolve().parents[2] / "protos"


@dataclass(frozen=True)
class Rpc:
    """One method of one service, as the descriptors describe it."""

    path: str
    method: MethodDescriptor
    request: type[Any]

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)


def load_services() -> dict[str, list[Rpc]]:
    """Every service in protos/, by full name, with message classes from a fresh pool."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    raw = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{well_known}",
            "--include_imports",
            "--descriptor_set_out=/dev/stdout",
            *sources,
        ],
        capture_output=True,
        check=True,
    ).stdout
    pool = descriptor_pool.DescriptorPool()
    files = descriptor_pb2.FileDescriptorSet.FromString(raw).file
    for proto in files:
        pool.Add(proto)
    services: dict[str, list[Rpc]] = {}
    for proto in files:
        if not proto.name.startswith("maestro/"):
            continue
        for service in pool.FindFileByName(proto.name).services_by_name.values():
            services[service.full_name] = [
                Rpc(
                    f"/{service.full_name}/{method.name}",
                    method,
                    message_factory.GetMessageClass(method.input_type),
                )
                for method in service.methods
            ]
    return services


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


STEP = "steps:\n  - {id: a, persona: backend_developer}\n"
# The inputs that once got INTERNAL, UNKNOWN, no answer, or stalled the scheduler.
HOSTILE_YAML = [
    "name: x\nretry: {max_attempts: " + "9" * 5001 + "}\n" + STEP,
    "name: 2024-13-45\n" + STEP,
    "name: !!int abc\n" + STEP,
    "name: !!float abc\n" + STEP,
    "name: !!bool maybe\n" + STEP,
    "name: !!timestamp abc\n" + STEP,
    "name: !!map [1]\n" + STEP,
    "? [a, b]\n: 1\nname: x\n" + STEP,
    "{a: 1}: 2\nname: x\n" + STEP,
    'name: x\nsteps:\n  - {id: a, persona: qa_engineer, instructions: "\\udfff"}\n',
    'name: x\nsteps:\n  - {id: "\\ud800", persona: qa_engineer, depends_on: ["\\ud800"]}\n',
    "name: x\ndefault_timeout: 99999999h\n" + STEP,
    "name: x\nsteps:\n"
    + "".join(f"  - {{id: s{i}, persona: qa_engineer}}\n" for i in range(10_000))[:120_000],
    "name: x\nsteps:\n  - {id: a, persona: qa_engineer, depends_on: ["
    + ", ".join(f"unknown_dependency_{i}" for i in range(1800))
    + "]}\n",
    "a: &a [*a]\nname: x\n" + STEP,
    "\n".join(
        ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    ),
    "x: " + "[" * 60_000 + "]" * 60_000,
    'name: "\\e]0;owned\\a\\e[2J"\n' + STEP,
    "name: x\n" + "k" * 100_000 + ": 1\n" + STEP,
    "name: !!python/object/apply:os.system [echo pwned]\n" + STEP,
    "---\nname: a\n---\nname: b\n",
    "",
    "\0",
]
HOSTILE_NAMES = [
    "runs/0123456789abcdef\n",
    "runs/abc\n",
    "runs/",
    "runs//",
    "runs/0123456789abcdef/",
    "runs/../0123456789abcdef",
    "runs/" + "a" * 100_000,
    "runs/0123456789abcdef/artifacts/.git/config",
    "runs/0123456789abcdef/artifacts/../../etc/passwd",
    "runs/0123456789abcdef/artifacts/a\u202eb",
    "runs/0123456789abcdef/artifacts/" + "x/" * 300,
    "/etc/passwd",
    "sdlc-parallel\n",
    "\u0000",
    "r\u00e9sum\u00e9",
]
HOSTILE_TOKENS = [
    _b64(("[" * 20_000 + "]" * 20_000).encode()),
    _b64(json.dumps({"t": "2026-01-01T00:00:00", "id": "\ud800"}).encode()),
    _b64(json.dumps({"t": "x" * 10_000, "id": 1}).encode()),
    _b64(b"r1.99999999999999999999999999.0123456789abcdef"),
    _b64(b"a1.\xff\xfe"),
    "=" * 10_000,
    "garbage!",
]
HOSTILE_TEXT = [
    "x" * 30_000,
    "x" * (2 * 1024 * 1024),  # past the gateway's 1 MiB: refused before any work
    "\x1b]0;owned\x07",
    "\u202e" * 100,
    "a\nb\r\nc",
]
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


Valid = dict[str, list[str]]
"""Values that pass validation, by field name (`*`: any other field). The lists may
grow while the suite runs (the names of runs it created)."""


def valid_values(field: FieldDescriptor, valid: Valid) -> list[str]:
    """The valid values of a field: by `Message.field`, else by field name, else `*`."""
    owner = field.containing_type
    own = valid.get(f"{owner.name}.{field.name}") if owner is not None else None
    return own or valid.get(field.name) or valid["*"]


def _valid(field: FieldDescriptor, valid: Valid) -> st.SearchStrategy[str]:
    return st.sampled_from(valid_values(field, valid))


def _strings(field: FieldDescriptor, valid: Valid) -> st.SearchStrategy[str]:
    pools = [HOSTILE_TEXT, HOSTILE_NAMES, HOSTILE_TOKENS]
    if "yaml" in field.name:
        pools.insert(0, HOSTILE_YAML)
    return st.one_of(_valid(field, valid), *(st.sampled_from(p) for p in pools), _TEXT)


def _scalar(field: FieldDescriptor, valid: Valid, hostile: bool) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _strings(field, valid) if hostile else _valid(field, valid)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    low, high = _INT_RANGES[kind]
    if not hostile:
        return st.integers(0, 3)
    edges = [v for v in (low, high, 0, -1, 1) if low <= v <= high]  # no -1 when unsigned
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def messages(descriptor: Descriptor, cls: type[Any], valid: Valid) -> st.SearchStrategy[Any]:
    """Messages of `cls`: mostly hostile, some built from valid values only, so the
    calls also get past validation (and create runs, which must then exist)."""
    return st.one_of(
        _messages(descriptor, cls, valid, hostile=True),
        _messages(descriptor, cls, valid, hostile=False),
    )


@st.composite
def _messages(
    draw: Any,
    descriptor: Descriptor,
    cls: type[Any],
    valid: Valid,
    *,
    hostile: bool,
    depth: int = 0,
) -> Any:
    """A message of `cls` with any subset of its fields set."""
    message = cls()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None:
            if depth >= 2:
                continue
            if field.message_type.GetOptions().map_entry:
                key, value = field.message_type.fields
                entries = draw(
                    st.dictionaries(
                        _scalar(key, valid, hostile), _scalar(value, valid, hostile), max_size=3
                    )
                )
                getattr(message, field.name).update(entries)
                continue
            sub_cls = message_factory.GetMessageClass(field.message_type)
            count = draw(st.integers(0, 2)) if field.is_repeated else 1
            for _ in range(count):
                sub = draw(
                    _messages(field.message_type, sub_cls, valid, hostile=hostile, depth=depth + 1)
                )
                if field.is_repeated:
                    getattr(message, field.name).add().CopyFrom(sub)
                else:
                    getattr(message, field.name).CopyFrom(sub)
            continue
        if field.is_repeated:
            values = draw(st.lists(_scalar(field, valid, hostile), max_size=3))
            getattr(message, field.name).extend(values)
        else:
            setattr(message, field.name, draw(_scalar(field, valid, hostile)))
    return message


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@st.composite
def undecodable(draw: Any, descriptor: Descriptor) -> bytes:
    """Bytes no parser accepts as this message."""
    strings = [f for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING]
    choices = [
        b"\x0a",  # field 1, length-delimited, no length
        b"\x08" + b"\xff" * 11,  # a varint of 11 bytes
        b"\x0f\x00",  # wire type 7
        b"\x0c",  # an END_GROUP with no group
        _varint(8) + b"\xff" * 3,  # field 1 varint, truncated
    ]
    if strings:
        number = draw(st.sampled_from(strings)).number
        bad_utf8 = draw(st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"a\xc3", b"\xc0\xaf"]))
        choices.append(_varint(number << 3 | 2) + _varint(len(bad_utf8)) + bad_utf8)
    chosen: bytes = draw(st.sampled_from(choices))
    return chosen

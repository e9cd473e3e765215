"""Clients in other languages can be generated from protos/: Go and Java options are set."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"


def _descriptors() -> list[descriptor_pb2.FileDescriptorProto]:
    """Every .proto under protos/, compiled by protoc (not Maestro's generated code)."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{well_known}",
            "--descriptor_set_out=/dev/stdout",
            *sources,
        ],
        capture_output=True,
        check=True,
    ).stdout
    return list(descriptor_pb2.FileDescriptorSet.FromString(out).file)


def test_every_proto_names_its_go_and_java_packages() -> None:
    files = _descriptors()
    assert files
    for proto in files:
        version = proto.package.rsplit(".", 1)[-1]
        options = proto.options
        assert options.go_package.endswith(f"/{version};{proto.package.split('.')[-2]}{version}"), (
            proto.name
        )
        assert options.java_package == "dev.maestro." + proto.package.removeprefix("maestro."), (
            proto.name
        )
        assert options.java_multiple_files, proto.name


@pytest.mark.skipif(shutil.which("protoc-gen-go") is None, reason="protoc-gen-go not installed")
def test_a_go_client_can_be_generated(tmp_path: Path) -> None:
    well_known = str(resources.files("grpc_tools") / "_proto")
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{well_known}",
            f"--plugin=protoc-gen-go={shutil.which('protoc-gen-go')}",
            f"--go_out={tmp_path}",
            "--go_opt=paths=source_relative",
            *sources,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    generated = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.pb.go"))
    assert generated == [s.removesuffix(".proto") + ".pb.go" for s in sources]

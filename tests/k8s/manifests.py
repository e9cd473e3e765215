"""Reading the rendered manifests: objects by kind and name, containers' environments
as the kubelet would build them, and the settings each Maestro container may be given.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from maestro.cli.db_cmd import DatabaseSettings
from maestro.core.auth import SERVICE_AUTH_ENV, SERVICE_CALLERS_ENV, SERVICE_TOKEN_ENV
from maestro.core.client import KEEPALIVE_ENV
from maestro.core.settings import SECRETS_DIR_ENV, UMASK_ENV
from persona_service.settings import WorkerSettings
from sandbox_service.settings import SandboxSettings
from scheduler.settings import SchedulerSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "production")

Obj = dict[str, Any]

# What each container command runs, and the settings class that reads its environment.
SETTINGS_OF: dict[tuple[str, ...], type[BaseSettings]] = {
    ("python", "-m", "gateway"): GatewaySettings,
    ("python", "-m", "scheduler"): SchedulerSettings,
    ("python", "-m", "persona_service"): WorkerSettings,
    ("python", "-m", "sandbox_service"): SandboxSettings,
    ("maestro", "db", "upgrade"): DatabaseSettings,
    ("maestro", "db", "wait"): DatabaseSettings,
}
# Read by every Maestro process outside its settings class.
PROCESS_WIDE_ENV = {KEEPALIVE_ENV, SECRETS_DIR_ENV, UMASK_ENV}
# Service authentication (maestro/core/auth.py), by what a service does: the gateway
# calls (its users' tokens are a setting); the sandbox is called; the others both.
AUTH_ENV: dict[tuple[str, ...], set[str]] = {
    ("python", "-m", "gateway"): {SERVICE_TOKEN_ENV},
    ("python", "-m", "scheduler"): {SERVICE_TOKEN_ENV, SERVICE_CALLERS_ENV, SERVICE_AUTH_ENV},
    ("python", "-m", "persona_service"): {SERVICE_TOKEN_ENV, SERVICE_CALLERS_ENV, SERVICE_AUTH_ENV},
    ("python", "-m", "sandbox_service"): {SERVICE_CALLERS_ENV, SERVICE_AUTH_ENV},
}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise AssertionError("kubectl is needed to render k8s/ (scripts/test.sh checks for it)")
    return path


def render(path: Path, *, load_restrictor: bool = True) -> list[Obj]:
    """`kubectl kustomize PATH`, parsed."""
    command = [kubectl(), "kustomize", str(path)]
    if not load_restrictor:
        command.append("--load-restrictor=LoadRestrictionsNone")
    text = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def settings_class(command: list[str]) -> type[BaseSettings]:
    for prefix, cls in SETTINGS_OF.items():
        if tuple(command[: len(prefix)]) == prefix:
            return cls
    raise AssertionError(f"no Maestro service runs {command}")


def known_env(command: list[str]) -> set[str]:
    """Every environment variable the process a container command starts reads."""
    return env_names(settings_class(command)) | AUTH_ENV.get(tuple(command[:3]), set())


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable the settings class reads (names, aliases)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{name}".upper())
    return names | PROCESS_WIDE_ENV


@dataclass
class Manifests:
    """One rendered overlay."""

    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        raise AssertionError(f"no {kind} {name} in the rendering")

    @property
    def namespace(self) -> str:
        (namespace,) = {
            o["metadata"].get("namespace") for o in self.objects if o["kind"] != "Namespace"
        }
        assert isinstance(namespace, str)
        return namespace

    def workloads(self) -> Iterator[Obj]:
        for kind in ("Deployment", "StatefulSet", "Job"):
            yield from self.of_kind(kind)

    def config_map(self, name: str) -> dict[str, str]:
        """A ConfigMap's data, by its rendered name or its generator's name."""
        for obj in self.of_kind("ConfigMap"):
            if name in (obj["metadata"]["name"], generator_name(obj["metadata"]["name"])):
                return dict(obj.get("data", {}))
        raise AssertionError(f"no ConfigMap {name} in the rendering")

    def secret(self, name: str) -> dict[str, str] | None:
        """The Secret's values (by its rendered name or its generator's name), or None
        when the overlay does not create it."""
        for obj in self.of_kind("Secret"):
            if name in (obj["metadata"]["name"], generator_name(obj["metadata"]["name"])):
                values = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
                values.update(obj.get("stringData", {}))
                return values
        return None

    def services_selecting(self, labels: dict[str, str]) -> list[Obj]:
        return [
            s
            for s in self.of_kind("Service")
            if s["spec"].get("selector")
            and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
        ]


@dataclass
class ContainerEnv:
    """A container's environment as the kubelet builds it (before any local change)."""

    values: dict[str, str] = field(default_factory=dict)
    missing_optional: list[str] = field(default_factory=list)


_HASHED = re.compile(r"^(?P<base>.+)-[bcdfghkmtz2-9]{10}$")


def generator_name(name: str) -> str:
    """The name a kustomize generator was given (its output adds a content hash)."""
    match = _HASHED.match(name)
    return match.group("base") if match else name


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def container_env(
    manifests: Manifests,
    container: Obj,
    field_values: dict[str, str],
    extra_secrets: dict[str, dict[str, str]] | None = None,
) -> ContainerEnv:
    """envFrom (in order), then env (which wins, with $(VAR) references expanded).

    Args:
        field_values: what fieldRef paths resolve to (metadata.name, status.podIP...).
        extra_secrets: Secrets that exist in the cluster without being in the overlay
            (the ones an operator creates by hand, as the README says).
    """
    env = ContainerEnv()

    def secret(name: str) -> dict[str, str] | None:
        found = manifests.secret(name)
        return found if found is not None else (extra_secrets or {}).get(name)

    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data: dict[str, str] | None = manifests.config_map(source["configMapRef"]["name"])
        else:
            data = secret(source["secretRef"]["name"])
        if data is None:
            raise AssertionError(f"envFrom names a missing source: {source}")
        env.values.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env.values[name] = _REFERENCE.sub(
                lambda m: env.values.get(m.group(1), m.group(0)), item["value"]
            )
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env.values[name] = field_values[source["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env.values[name] = manifests.config_map(ref["name"])[ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = secret(ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    env.missing_optional.append(name)
                    continue
                raise AssertionError(f"{name}: Secret {ref['name']} / {ref['key']} is missing")
            env.values[name] = data[ref["key"]]
        else:
            raise AssertionError(f"{name}: unsupported valueFrom {source}")
    return env


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def grpc_port(container: Obj) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "grpc"]
    assert isinstance(port, int)
    return port


def dockerfile_env() -> dict[str, str]:
    """ENV of the Dockerfile's final stage (the containers' environment before the pod's)."""
    stages = re.split(r"^FROM ", (ROOT / "Dockerfile").read_text(encoding="utf-8"), flags=re.M)
    final = stages[-1]
    env: dict[str, str] = {}
    joined = re.sub(r"\\\n\s*", " ", final)
    for line in joined.splitlines():
        if line.startswith("ENV "):
            for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line):
                env[key] = value
    return env

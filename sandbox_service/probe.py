"""The isolation probe: a tiny program run in the jail that reports what it can see.

Run at start (and after a jail breaks). Isolation counts as working only if the probe
ran as the unprivileged user, in other network, PID and mount namespaces than this
service, with none of the service's environment, could not reach a listener on the
host's loopback, and could not see a file in the service's scratch area.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path

from maestro.sandbox.models import Isolation
from sandbox_service.isolation import Jail, JailBroken

PROBE_CODE = """
import json, os, socket, sys
port, sentinel = int(sys.argv[1]), sys.argv[2]
facts = {
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "ppid": os.getppid(),
    "env": sorted(os.environ), "sentinel_visible": os.path.exists(sentinel),
    "ns": {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in ("net", "pid", "mnt")},
}
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    facts["connected"] = True
except OSError:
    facts["connected"] = False
print(json.dumps(facts))
"""


def _own_namespaces() -> dict[str, int]:
    return {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in ("net", "pid", "mnt")}


def judge(facts: dict[str, object], *, uid: int, env: set[str], arrived: int) -> list[str]:
    """What is wrong with the isolation the probe saw; empty when nothing is."""
    problems = []
    if facts.get("uid") != uid or facts.get("euid") != uid or facts.get("gid") != uid:
        problems.append(f"the probe ran as uid {facts.get('uid')}, not {uid}")
    if facts.get("ppid") != 1:
        problems.append("the probe's parent is not PID 1 of a new PID namespace")
    namespaces = facts.get("ns")
    own = _own_namespaces()
    if not isinstance(namespaces, dict) or any(namespaces.get(n) == i for n, i in own.items()):
        problems.append("the probe shares a namespace (network, PID or mount) with the service")
    if facts.get("connected") is not False or arrived:
        problems.append("the probe reached a listener on the host's loopback")
    seen_env = facts.get("env")
    extra = set(seen_env) - env if isinstance(seen_env, list) else {"(unreadable)"}
    if extra:
        problems.append(f"the probe saw environment variables it was not given: {sorted(extra)}")
    if facts.get("sentinel_visible") is not False:
        problems.append("the probe could see the service's scratch directory")
    return problems


async def probe_isolation(jail: Jail, scratch: Path, *, uid: int) -> str:
    """Runs the probe in the jail; returns what is wrong, or "" when isolation works."""
    missing = jail.missing_tools()
    if missing:
        return missing
    arrived = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived
        arrived += 1
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    run_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="probe-", dir=scratch))
    try:
        port = server.sockets[0].getsockname()[1]
        sentinel = run_dir / "sentinel"
        await asyncio.to_thread(sentinel.write_text, "the host's files", "utf-8")
        await asyncio.to_thread((run_dir / "in").mkdir)
        paths = jail.paths(run_dir, "probe")
        argv = [jail.view.python, "-I", "-c", PROBE_CODE, str(port), str(sentinel)]
        try:
            result = await jail.run(run_dir, "probe", argv, uid=uid)
        except JailBroken as err:
            return err.message
        output = result.stdout.decode("utf-8", "replace").strip()
        if result.exit_code != 0 or not output:
            detail = (output + result.stderr.decode("utf-8", "replace")).strip()[-500:]
            return f"the probe failed (exit {result.exit_code}): {detail}"
        if jail.isolation is Isolation.NONE:
            return ""
        try:
            facts = json.loads(output.splitlines()[-1])
        except json.JSONDecodeError:
            return f"the probe's answer is not JSON: {output[-200:]}"
        problems = judge(facts, uid=uid, env=set(jail.env(paths)), arrived=arrived)
        return "; ".join(problems)
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.to_thread(shutil.rmtree, run_dir, True)

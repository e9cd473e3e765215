"""The Dockerfile's build stage, run on this machine (no container engine here).

The stage's COPY lines and its RUN command are taken from the Dockerfile and run with
this machine's Python 3.11 (the image's base is Python 3.11) in a scratch directory
standing for /src, /opt/maestro and /wheels: the wheel builds, every dependency
installs from a wheel (`--only-binary=:all:`, so no compiler is used), pip is gone
afterwards, and every service's entry point imports from the environment the final
stage copies. pip's download cache is allowed here (the image build disables it).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s.manifests import ROOT

pytestmark = pytest.mark.timeout(600)


def _build_stage() -> tuple[list[tuple[str, str]], str, dict[str, str]]:
    """(COPY source, destination) pairs, the RUN command and the ENV of the first stage."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stage = re.split(r"^FROM ", text, flags=re.M)[1]
    copies, runs, env = [], [], {}
    for line in stage.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "COPY":
            *sources, destination = words[1:]
            copies += [(source, destination) for source in sources]
        elif words[0] == "RUN":
            runs.append(line.removeprefix("RUN ").strip())
        elif words[0] == "ENV":
            env.update(dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line)))
    (run,) = runs
    return copies, run, env


def test_the_build_stage_installs_maestro_from_wheels_only(tmp_path: Path) -> None:
    copies, run, env = _build_stage()
    src, venv, wheels = tmp_path / "src", tmp_path / "opt-maestro", tmp_path / "wheels"
    src.mkdir()
    for source, destination in copies:
        target = (src / destination).resolve()
        if (ROOT / source).is_dir():
            shutil.copytree(
                ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy(ROOT / source, target if destination != "./" else src / source)
    command = run.replace("/opt/maestro", str(venv)).replace("/wheels", str(wheels))
    command = command.replace("--no-cache-dir ", "")
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    assert base_python.exists()
    shell_env = {**os.environ, **env, "PATH": f"{base_python.parent}:{os.environ['PATH']}"}
    shell_env.pop("PIP_NO_CACHE_DIR", None)
    shell_env.pop("VIRTUAL_ENV", None)
    command = command.replace("python -m venv", f"{shlex.quote(str(base_python))} -m venv", 1)
    built = subprocess.run(
        ["sh", "-c", command], cwd=src, env=shell_env, capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    assert not (venv / "bin" / "pip").exists(), "the final image carries no pip"
    help_ = subprocess.run(
        [venv / "bin" / "maestro", "db", "--help"], capture_output=True, text=True, check=False
    )
    assert help_.returncode == 0 and "upgrade" in help_.stdout
    probe = (
        "import gateway.__main__, scheduler.__main__, persona_service.__main__, "
        "sandbox_service.__main__\n"
        "from sandbox_service.toolchain import host_view\n"
        "print(host_view().python)\n"
    )
    imported = subprocess.run(
        [venv / "bin" / "python", "-c", probe],
        cwd=tmp_path,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip().startswith(str(venv))

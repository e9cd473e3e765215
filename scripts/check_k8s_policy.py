"""Policy check of the Kubernetes manifests and the Dockerfile with checkov.

Renders every overlay with `kubectl kustomize`, runs checkov (from its own virtual
environment, .venv-checkov: it cannot share Maestro's pins) on each rendering and on
the Dockerfile, and compares the failed checks with k8s/policy-exceptions.yaml: a
finding not justified there fails, and so does a justification that matches no finding.

    python scripts/check_k8s_policy.py --checkov .venv-checkov/bin/checkov
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ("dev", "production")
EXCEPTIONS = ROOT / "k8s" / "policy-exceptions.yaml"


@dataclass(frozen=True)
class Finding:
    target: str
    check: str
    resource: str
    name: str


@dataclass(frozen=True)
class Exception_:
    check: str
    targets: tuple[str, ...]
    resources: tuple[str, ...]
    reason: str

    def covers(self, finding: Finding) -> bool:
        return (
            finding.check == self.check
            and finding.target in self.targets
            and any(fnmatch.fnmatchcase(finding.resource, p) for p in self.resources)
        )


def load_exceptions(path: Path) -> list[Exception_]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = []
    for item in raw["exceptions"]:
        if not str(item.get("reason", "")).strip():
            raise SystemExit(f"{path}: {item['check']} has no reason")
        entries.append(
            Exception_(
                check=item["check"],
                targets=tuple(item["targets"]),
                resources=tuple(item["resources"]),
                reason=item["reason"],
            )
        )
    return entries


def run_checkov(checkov: str, target: str, path: Path, framework: str) -> list[Finding]:
    proc = subprocess.run(
        [checkov, "-f", str(path), "--framework", framework, "--skip-download"]
        + ["--quiet", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # checkov exits 1 when a check failed; anything else (or no JSON) is its own failure.
    if proc.returncode not in (0, 1):
        raise SystemExit(f"checkov failed on {path} ({proc.returncode}):\n{proc.stderr}")
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    findings = []
    for report in reports:
        if report["summary"].get("parsing_errors"):
            raise SystemExit(f"checkov could not parse {path}")
        if not report["summary"].get("passed"):
            raise SystemExit(f"checkov ran no check on {path}")
        for failed in report["results"]["failed_checks"]:
            findings.append(
                Finding(target, failed["check_id"], failed["resource"], failed["check_name"])
            )
    return findings


def render(overlay: str, out_dir: Path) -> Path:
    out = out_dir / f"{overlay}.yaml"
    text = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    out.write_text(text, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkov", default="checkov", help="the checkov command")
    args = parser.parse_args(argv)
    exceptions = load_exceptions(EXCEPTIONS)
    findings: list[Finding] = []
    with tempfile.TemporaryDirectory() as tmp:
        for overlay in OVERLAYS:
            findings += run_checkov(args.checkov, overlay, render(overlay, Path(tmp)), "kubernetes")
    findings += run_checkov(args.checkov, "Dockerfile", ROOT / "Dockerfile", "dockerfile")

    unjustified = [f for f in findings if not any(e.covers(f) for e in exceptions)]
    stale = [e for e in exceptions if not any(e.covers(f) for f in findings)]
    justified = len(findings) - len(unjustified)
    print(f"checkov: {len(findings)} findings, {justified} justified in {EXCEPTIONS.name}")
    for f in unjustified:
        print(f"  NOT JUSTIFIED {f.target}: {f.check} {f.resource} ({f.name})")
    for e in stale:
        print(f"  STALE: {e.check} on {', '.join(e.resources)} matches no finding any more")
    return 1 if unjustified or stale else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Installs Maestro with its development tools into .venv, then runs every check CI runs:
# generated-code drift, formatting, lint, strict types, the k8s/ policy check and the
# container image (built only where a container engine runs), and the unit, integration,
# e2e and k8s test tiers (the e2e tier starts every service as its own process; the k8s
# tier renders and validates k8s/ and runs the dev overlay as local processes).
set -euo pipefail
cd "$(dirname "$0")/.."

# The k8s tier needs these from the machine; nothing is installed system-wide here.
# kubectl renders k8s/ with its built-in kustomize (components: kubectl 1.21 or newer;
# Debian's kubernetes-client package is 1.20, too old). setpriv (util-linux) runs each
# local pod under its manifest's user and capabilities.
for tool in kubectl setpriv; do
    command -v "$tool" >/dev/null || { echo "error: $tool is needed (see the comment above)" >&2; exit 1; }
done

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# checkov cannot share Maestro's pins (it needs packaging<24): a virtualenv of its own,
# reinstalled when its pinned requirements change.
if ! cmp -s scripts/requirements-checkov.txt .venv-checkov/requirements.txt 2>/dev/null; then
    rm -rf .venv-checkov
    python3 -m venv .venv-checkov
    .venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check \
        -r scripts/requirements-checkov.txt
    cp scripts/requirements-checkov.txt .venv-checkov/requirements.txt
fi
# shellcheck disable=SC1091
. .venv/bin/activate

# A Go client must be generatable from protos/ (tests/unit/test_proto_options.py);
# Debian packages protoc-gen-go. Without it (no root, no apt) that one test is skipped.
if ! command -v protoc-gen-go >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq protoc-gen-go >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq protoc-gen-go >/dev/null 2>&1; }; } \
        || echo "protoc-gen-go could not be installed; the Go generation test will be skipped"
fi

echo "== generated code"; python scripts/gen_protos.py --check
echo "== ruff format";    ruff format --check .
echo "== ruff check";     ruff check .
echo "== mypy";           mypy
echo "== k8s policy";     python scripts/check_k8s_policy.py --checkov .venv-checkov/bin/checkov
echo "== container image"
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    docker build --tag maestro:ci .
else
    # Said plainly, not passed: the Dockerfile is still linted (hadolint, checkov) and
    # its build stage is run on this machine by tests/k8s/test_image.py.
    echo "SKIPPED: no container engine answers here (docker info failed); the image was not built"
fi
echo "== pytest"
python -m pytest -q -p no:cacheprovider tests/unit tests/integration tests/e2e tests/k8s "$@"

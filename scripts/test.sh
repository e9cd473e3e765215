#!/usr/bin/env bash
# Installs Maestro with its development tools into .venv, then runs every check CI runs:
# generated-code drift, formatting, lint, strict types, and the unit, integration and
# e2e test tiers (the e2e tier starts every service as its own process).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
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
echo "== pytest";         python -m pytest -q -p no:cacheprovider tests/unit tests/integration tests/e2e "$@"

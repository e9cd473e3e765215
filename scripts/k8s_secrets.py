"""Makes the credentials Secrets a Maestro namespace needs, as YAML on stdout.

    python scripts/k8s_secrets.py --user alice --user bob | kubectl -n maestro apply -f -

- `maestro-service-auth`: each service's own token (the gateway, the scheduler and the
  workers call other services) and, for each service that is called, the hashes of
  the callers it answers (MAESTRO_SERVICE_CALLERS): the scheduler answers the gateway,
  a worker the scheduler, the sandbox the scheduler and the workers.
- `maestro-gateway-tokens`: the users' tokens as the gateway checks them (hashes only,
  one `IDENTITY sha256:HEX` per line); each user's token is printed once, on stderr.

Tokens are fresh and random on every run; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import base64
import sys

import yaml

from maestro.core.auth import callers_entry, hash_token, new_token

# Who calls whom (the identities are the services' module names, as a local stack's).
CALLERS = {
    "scheduler-callers": ("gateway",),
    "worker-callers": ("scheduler",),
    "sandbox-callers": ("scheduler", "persona_service"),
}
TOKEN_KEYS = {
    "gateway": "gateway-token",
    "scheduler": "scheduler-token",
    "persona_service": "worker-token",
}


def service_auth(tokens: dict[str, str]) -> dict[str, str]:
    """The keys of `maestro-service-auth` for these service tokens (by identity)."""
    data = {TOKEN_KEYS[identity]: token for identity, token in tokens.items()}
    for key, callers in CALLERS.items():
        data[key] = ",".join(callers_entry(caller, tokens[caller]) for caller in callers)
    return data


def gateway_tokens(users: dict[str, str]) -> str:
    """The tokens file of `maestro-gateway-tokens` for these users' tokens."""
    return "".join(f"{name} {hash_token(token)}\n" for name, token in users.items())


def _secret(name: str, data: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "maestro"}},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", action="append", required=True, help="a user identity")
    args = parser.parse_args(argv)
    services = {identity: new_token() for identity in TOKEN_KEYS}
    users = {name: new_token() for name in args.user}
    for name, token in users.items():
        print(f"token of {name}: {token}", file=sys.stderr)
    documents = [
        _secret("maestro-service-auth", service_auth(services)),
        _secret("maestro-gateway-tokens", {"tokens": gateway_tokens(users)}),
    ]
    print(yaml.safe_dump_all(documents, sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Decisions the command line makes before it talks to anything: which workflow, which
provider, which gateway. Pure functions of their inputs (plus reading a workflow file),
so the rules are tested directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from maestro.cli.credentials import read_local_token
from maestro.workflow import (
    WorkflowError,
    WorkflowSpec,
    builtin_workflow_names,
    load_workflow,
    parse_workflow_yaml,
)

DEFAULT_WORKFLOW = "sdlc-parallel"
PROVIDERS = ("anthropic", "offline")
GATEWAY_ENV = "MAESTRO_GATEWAY"
TOKEN_ENV = "MAESTRO_TOKEN"
CA_FILE_ENV = "MAESTRO_CA_FILE"
TLS_ENV = "MAESTRO_TLS"
LOCAL_DATA_DIR = Path(".maestro")
API_KEY_ENV = "ANTHROPIC_API_KEY"
ANTHROPIC_MODEL_ENV = "MAESTRO_WORKER_ANTHROPIC_MODEL"
# The persona worker's default model (persona_service/settings.py; a test keeps the two
# equal), named up front when a local run uses the anthropic provider.
DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-5-5"
OFFLINE_NOTICE = f"{API_KEY_ENV} is not set: using the offline provider (deterministic, no network)"
NO_GATEWAY_MESSAGE = (
    f"no gateway address: pass --gateway HOST:PORT or set {GATEWAY_ENV} "
    "(`maestro up` starts a local stack and prints it)"
)


@dataclass(frozen=True)
class WorkflowChoice:
    """A validated workflow and how to send it: by built-in name or as YAML text."""

    spec: WorkflowSpec
    workflow_name: str | None = None
    workflow_yaml: str | None = None


@dataclass(frozen=True)
class ProviderChoice:
    """The provider to use and, when it was picked for the user, why."""

    provider: str
    notice: str | None = None


def resolve_workflow(ref: str) -> WorkflowChoice:
    """Validates a workflow given as a built-in name or a YAML file path.

    A built-in name wins over a file of the same name in the current directory, the
    same rule `load_workflow` follows. A file is read once: the text validated here
    is exactly the text sent to the gateway.

    Raises:
        WorkflowError: no such built-in or file, an unreadable file, or an invalid
            workflow; the message lists every problem.
    """
    if ref in builtin_workflow_names():
        return WorkflowChoice(spec=load_workflow(ref), workflow_name=ref)
    try:
        text = Path(ref).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        # load_workflow knows how to explain a missing or unreadable file (and lists
        # the built-in names); it raises here because the read just failed.
        load_workflow(ref)
        raise
    return WorkflowChoice(spec=parse_workflow_yaml(text, source=ref), workflow_yaml=text)


def choose_provider(flag: str | None, env: Mapping[str, str]) -> ProviderChoice:
    """`--provider` wins; else anthropic when ANTHROPIC_API_KEY is set; else offline.

    Falling back to offline is announced, because offline output is canned and must
    never pass for a real model's work.
    """
    if flag:
        return ProviderChoice(flag)
    if env.get(API_KEY_ENV, "").strip():
        return ProviderChoice("anthropic")
    return ProviderChoice("offline", notice=OFFLINE_NOTICE)


@dataclass(frozen=True)
class GatewayTarget:
    """Where the gateway is and how to reach it."""

    address: str
    token: str | None = None
    tls: bool = False
    root_certificates: bytes | None = None


class TargetError(ValueError):
    """A gateway's TLS settings that cannot be used (an unreadable CA file)."""


def is_loopback(address: str) -> bool:
    """Whether `host:port` names this machine (only there is ./.maestro's token used)."""
    host = address.rsplit(":", 1)[0].strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def gateway_target(
    address: str,
    *,
    token: str | None,
    ca_file: str | None,
    tls: bool,
    env: Mapping[str, str],
    data_dir: Path = LOCAL_DATA_DIR,
) -> GatewayTarget:
    """The token and TLS settings for a gateway address.

    The token is `--token`, else MAESTRO_TOKEN, else (only for a gateway on this
    machine) the local stack's own token in `data_dir`, so `maestro up` in one
    terminal and `maestro runs list` in another need nothing more. TLS is on with
    `--tls`/MAESTRO_TLS=1 (the system's CAs) or `--ca-file`/MAESTRO_CA_FILE.

    Raises:
        TargetError: the CA file cannot be read.
    """
    chosen = (token or env.get(TOKEN_ENV, "")).strip() or None
    if chosen is None and is_loopback(address):
        chosen = read_local_token(data_dir)
    ca_path = ca_file or env.get(CA_FILE_ENV, "").strip() or None
    roots: bytes | None = None
    if ca_path:
        try:
            roots = Path(ca_path).read_bytes()
        except OSError as err:
            raise TargetError(f"cannot read the CA file {ca_path}: {err.strerror}") from None
    use_tls = tls or env.get(TLS_ENV, "").strip().lower() in ("1", "true", "yes") or bool(roots)
    return GatewayTarget(address, chosen, use_tls, roots)


def gateway_address(flag: str | None, env: Mapping[str, str]) -> str | None:
    """`--gateway` wins over MAESTRO_GATEWAY; None when neither is set."""
    for value in (flag, env.get(GATEWAY_ENV)):
        if value and value.strip():
            return value.strip()
    return None


__all__ = [
    "ANTHROPIC_MODEL_ENV",
    "API_KEY_ENV",
    "DEFAULT_ANTHROPIC_MODEL",
    "GATEWAY_ENV",
    "CA_FILE_ENV",
    "DEFAULT_WORKFLOW",
    "LOCAL_DATA_DIR",
    "NO_GATEWAY_MESSAGE",
    "OFFLINE_NOTICE",
    "PROVIDERS",
    "TLS_ENV",
    "TOKEN_ENV",
    "GatewayTarget",
    "ProviderChoice",
    "TargetError",
    "WorkflowChoice",
    "WorkflowError",
    "choose_provider",
    "gateway_address",
    "gateway_target",
    "is_loopback",
    "resolve_workflow",
]

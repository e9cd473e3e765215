"""Decisions the command line makes before it talks to anything: which workflow, which
provider, which gateway. Pure functions of their inputs (plus reading a workflow file),
so the rules are tested directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
API_KEY_ENV = "ANTHROPIC_API_KEY"
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


def gateway_address(flag: str | None, env: Mapping[str, str]) -> str | None:
    """`--gateway` wins over MAESTRO_GATEWAY; None when neither is set."""
    for value in (flag, env.get(GATEWAY_ENV)):
        if value and value.strip():
            return value.strip()
    return None


__all__ = [
    "DEFAULT_WORKFLOW",
    "NO_GATEWAY_MESSAGE",
    "OFFLINE_NOTICE",
    "PROVIDERS",
    "ProviderChoice",
    "WorkflowChoice",
    "WorkflowError",
    "choose_provider",
    "gateway_address",
    "resolve_workflow",
]

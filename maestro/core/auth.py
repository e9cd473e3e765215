"""Who is calling: bearer tokens checked against hashes, for users and for services.

Two kinds of caller carry `authorization: Bearer <token>` metadata:

- users of the public gateway, whose tokens are listed (as sha256 hashes, each with
  an identity name) in the file MAESTRO_GATEWAY_TOKENS_FILE names;
- Maestro services calling each other: each process presents its own service token
  (MAESTRO_SERVICE_TOKEN) and accepts only the callers listed, hashed, in
  MAESTRO_SERVICE_CALLERS, so a worker answers only the scheduler, say.

Tokens are never stored, only their sha256; a presented token is hashed and compared
with every entry in constant time. Health and reflection need no token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from maestro.core.errors import Unauthenticated
from maestro.core.settings import SECRETS_DIR_ENV

log = logging.getLogger(__name__)

# Outgoing: the token this process presents to the Maestro services it calls.
SERVICE_TOKEN_ENV = "MAESTRO_SERVICE_TOKEN"
# Incoming: the callers this service answers, as `identity=sha256:HEX,...`.
SERVICE_CALLERS_ENV = "MAESTRO_SERVICE_CALLERS"
# `required` (the default) or `disabled` (anyone who reaches the port may call).
SERVICE_AUTH_ENV = "MAESTRO_SERVICE_AUTH"

AUTHORIZATION = "authorization"
# Services every caller may use without a token: probes and schema discovery.
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
)

IDENTITY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HASH_PATTERN = re.compile(r"sha256:([0-9a-f]{64})")
TOKEN_PREFIX = "mst_"
_MAX_TOKEN_CHARS = 512


class AuthConfigError(ValueError):
    """Authentication settings that cannot work; services refuse to start on it."""


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    Attributes:
        name: The identity's name (`local`, `alice`, or a service: `scheduler`).
        admin: Sees and may act on every run, not only its own.
    """

    name: str
    admin: bool = False


current_identity: ContextVar[Identity | None] = ContextVar("current_identity", default=None)


def new_token() -> str:
    """A fresh random bearer token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """`sha256:HEX` of a token: what tokens files and settings hold."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenTable:
    """Hashed tokens and the identity each one stands for."""

    def __init__(self, entries: Iterable[tuple[str, Identity]]) -> None:
        """Args: entries: (`sha256:HEX`, identity) pairs."""
        self._entries: list[tuple[bytes, Identity]] = []
        for hashed, identity in entries:
            match = _HASH_PATTERN.fullmatch(hashed)
            if match is None:
                raise AuthConfigError(f"{hashed[:20]!r}... is not sha256:<64 hex digits>")
            self._entries.append((bytes.fromhex(match.group(1)), identity))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def identities(self) -> list[Identity]:
        return [identity for _, identity in self._entries]

    def identify(self, token: str) -> Identity | None:
        """The identity of a presented token, or None.

        Compares with every entry, without stopping at a match, in constant time.
        """
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Identity | None = None
        for known, identity in self._entries:
            if hmac.compare_digest(known, digest):
                found = identity
        return found


def parse_tokens_file(text: str, *, admins: Iterable[str] = (), source: str = "") -> TokenTable:
    """Reads a tokens file: one `IDENTITY sha256:HEX` per line; `#` starts a comment.

    Raises:
        AuthConfigError: a malformed line (the message says which), or no token.
    """
    admin_names = set(admins)
    entries: list[tuple[str, Identity]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        parts = content.split()
        if (
            len(parts) != 2
            or not IDENTITY_PATTERN.fullmatch(parts[0])
            or not _HASH_PATTERN.fullmatch(parts[1])
        ):
            raise AuthConfigError(
                f"{source or 'tokens file'} line {number}: expected "
                "'IDENTITY sha256:<64 hex digits>'"
            )
        entries.append((parts[1], Identity(parts[0], admin=parts[0] in admin_names)))
    if not entries:
        raise AuthConfigError(f"{source or 'tokens file'} lists no token")
    return TokenTable(entries)


def load_tokens_file(path: Path, *, admins: Iterable[str] = ()) -> TokenTable:
    """Reads and parses a tokens file (at start-up, before serving).

    Raises:
        AuthConfigError: unreadable, malformed, or readable by other users.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AuthConfigError(f"cannot read the tokens file {path}: {err}") from None
    if mode & 0o022:
        raise AuthConfigError(f"the tokens file {path} is writable by others; chmod 600 it")
    return parse_tokens_file(text, admins=admins, source=str(path))


def parse_callers(value: str) -> TokenTable:
    """Reads MAESTRO_SERVICE_CALLERS: `identity=sha256:HEX` entries, comma-separated.

    Raises:
        AuthConfigError: a malformed entry, or none.
    """
    entries: list[tuple[str, Identity]] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, hashed = item.partition("=")
        if not sep or not IDENTITY_PATTERN.fullmatch(name) or not _HASH_PATTERN.fullmatch(hashed):
            raise AuthConfigError(
                f"{SERVICE_CALLERS_ENV}: expected 'identity=sha256:<64 hex digits>' entries"
            )
        entries.append((hashed, Identity(name)))
    if not entries:
        raise AuthConfigError(f"{SERVICE_CALLERS_ENV} lists no caller")
    return TokenTable(entries)


def callers_entry(identity: str, token: str) -> str:
    """One MAESTRO_SERVICE_CALLERS entry for a caller's token."""
    return f"{identity}={hash_token(token)}"


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` entry, if there is one."""
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class Authenticator(Protocol):
    """Decides who a call comes from, from its metadata."""

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Identity:
        """Returns the caller's identity.

        Raises:
            Unauthenticated: no usable credentials.
        """
        ...


class BearerAuthenticator:
    """Accepts `authorization: Bearer <token>` for a token in a table."""

    def __init__(self, table: TokenTable, *, realm: str) -> None:
        """Args: table: the accepted tokens; realm: who asks, for messages."""
        self._table = table
        self._realm = realm

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Identity:
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated(
                f"{self._realm} needs a bearer token: send 'authorization: Bearer <token>'",
                error_reason="TOKEN_MISSING",
            )
        identity = self._table.identify(token) if len(token) <= _MAX_TOKEN_CHARS else None
        if identity is None:
            raise Unauthenticated(
                f"{self._realm} does not accept this token", error_reason="TOKEN_INVALID"
            )
        return identity


class AnyCaller:
    """No authentication at all (MAESTRO_SERVICE_AUTH=disabled): for loopback tests only."""

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Identity:
        return Identity("anonymous")


def service_authenticator(
    service: str, env: Mapping[str, str] | None = None
) -> BearerAuthenticator | AnyCaller:
    """The authenticator of an internal service, from its environment.

    Raises:
        AuthConfigError: MAESTRO_SERVICE_CALLERS is missing or malformed while
            MAESTRO_SERVICE_AUTH is not `disabled`.
    """
    env = os.environ if env is None else env
    mode = env.get(SERVICE_AUTH_ENV, "required").strip().lower()
    if mode == "disabled":
        log.warning(
            "%s=disabled: %s answers anyone who can reach its port", SERVICE_AUTH_ENV, service
        )
        return AnyCaller()
    if mode != "required":
        raise AuthConfigError(f"{SERVICE_AUTH_ENV} must be 'required' or 'disabled'")
    callers = env.get(SERVICE_CALLERS_ENV, "").strip()
    if not callers:
        raise AuthConfigError(
            f"{service} needs {SERVICE_CALLERS_ENV} (the callers it answers, as "
            f"identity=sha256:HEX entries), or {SERVICE_AUTH_ENV}=disabled"
        )
    table = parse_callers(callers)
    log.info("%s answers: %s", service, ", ".join(i.name for i in table.identities))
    return BearerAuthenticator(table, realm=service)


def service_token(env: Mapping[str, str] | None = None) -> str | None:
    """The token this process presents to other Maestro services, if it has one: the
    environment's, else a file of that name in MAESTRO_SECRETS_DIR (a mounted Secret)."""
    env = os.environ if env is None else env
    token = env.get(SERVICE_TOKEN_ENV, "").strip()
    if not token and (directory := env.get(SECRETS_DIR_ENV, "")):
        path = Path(directory) / SERVICE_TOKEN_ENV
        if path.is_file():
            token = path.read_text(encoding="utf-8").strip()
    return token or None

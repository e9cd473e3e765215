"""The local stack's credentials, kept in its data directory (mode 0700, files 0600).

- `token`: the local user's bearer token for the gateway (identity `local`, an admin).
  The CLI reads it, so `maestro run` and `maestro up` need nothing from the user.
- `gateway-tokens`: what the gateway checks tokens against (sha256 hashes only).
- `service.key`: a secret from which each service's own token is derived; each
  service is told only its own token and the hashes of the callers it answers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from maestro.core.auth import TOKEN_PREFIX, callers_entry, hash_token, new_token

LOCAL_IDENTITY = "local"
TOKEN_FILE = "token"
TOKENS_FILE = "gateway-tokens"
SERVICE_KEY_FILE = "service.key"

# Who may call whom inside a local stack (by service module name): a worker answers
# only the scheduler; the sandbox the scheduler and workers; the scheduler the gateway.
# The gateway itself takes user tokens instead.
CALLERS: dict[str, tuple[str, ...]] = {
    "persona_service": ("scheduler",),
    "sandbox_service": ("scheduler", "persona_service"),
    "scheduler": ("gateway",),
}


class CredentialsError(RuntimeError):
    """The data directory's credentials cannot be read or made safe."""


@dataclass(frozen=True)
class LocalCredentials:
    """Attributes: data_dir; user_token: the local user's gateway token; tokens_file:
    the gateway's hashed tokens; key: the secret service tokens are derived from."""

    data_dir: Path
    user_token: str
    tokens_file: Path
    key: bytes

    def service_token(self, service: str) -> str:
        """The token `service` presents when it calls other services."""
        digest = hmac.new(self.key, service.encode(), hashlib.sha256).digest()
        return TOKEN_PREFIX + digest.hex()

    def callers_of(self, service: str) -> str:
        """MAESTRO_SERVICE_CALLERS for `service`: the callers it answers, hashed."""
        return ",".join(
            callers_entry(caller, self.service_token(caller)) for caller in CALLERS.get(service, ())
        )


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)


def _private_files(directory: Path) -> None:
    # The stack creates its lock and its services' log files itself, with the user's
    # umask; logs can hold prompts and paths, so they are made private too.
    if not directory.is_dir() or directory.is_symlink():
        return
    directory.chmod(0o700)
    for entry in directory.iterdir():
        if entry.is_file() and not entry.is_symlink() and entry.stat().st_mode & 0o077:
            entry.chmod(0o600)


def _read_or_create(path: Path, make: bytes) -> bytes:
    """The file's content; created with `make` (mode 0600, never over another file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as file:
            file.write(make)
        return make
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise CredentialsError(f"{path} is not a regular file")
    if stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(0o600)
    return path.read_bytes()


def ensure_local_credentials(data_dir: Path) -> LocalCredentials:
    """Reads the data directory's credentials, creating what is missing.

    Blocking file I/O on a few small files.

    Raises:
        CredentialsError: a credentials file is not a regular file or is malformed.
    """
    try:
        _private_dir(data_dir)
        _private_files(data_dir)
        _private_files(data_dir / "logs")
        token = _read_or_create(data_dir / TOKEN_FILE, (new_token() + "\n").encode())
        user_token = token.decode("ascii").strip()
        if not user_token.startswith(TOKEN_PREFIX):
            raise CredentialsError(f"{data_dir / TOKEN_FILE} does not hold a Maestro token")
        tokens_file = data_dir / TOKENS_FILE
        line = f"{LOCAL_IDENTITY} {hash_token(user_token)}\n"
        current = _read_or_create(tokens_file, line.encode())
        if line.encode() not in current:
            # The token was replaced by hand: the gateway must accept the new one.
            tokens_file.write_bytes(current + line.encode())
        key = _read_or_create(data_dir / SERVICE_KEY_FILE, secrets.token_hex(32).encode())
    except (OSError, UnicodeDecodeError) as err:
        raise CredentialsError(f"cannot prepare the credentials in {data_dir}: {err}") from None
    return LocalCredentials(data_dir, user_token, tokens_file, key.strip())


def read_local_token(data_dir: Path) -> str | None:
    """The local user's token in `data_dir`, or None when there is none (yet)."""
    try:
        text = (data_dir / TOKEN_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text.startswith(TOKEN_PREFIX) else None

"""Logging: configured once in each service's __main__, JSON lines on stderr or a file.

Request, run and step ids live in contextvars that the serving interceptor sets, so
every record a request causes carries them without passing them around. Long values
are cut (a 200 KB requirement must not land whole in a log line), and a log file, when
one is set, is rotated by size.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maestro.core.settings import ServiceSettings

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
run_id_var: ContextVar[str] = ContextVar("run_id", default="")
step_id_var: ContextVar[str] = ContextVar("step_id", default="")

DEFAULT_MAX_VALUE_CHARS = 2000
# A message may hold several values, each cut to the limit; the whole is cut at this
# many times the limit. A traceback says where things went wrong: it gets more still.
_MESSAGE_FACTOR = 4
_EXCEPTION_FACTOR = 10


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, ending with how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def _short(value: Any, limit: int) -> Any:
    if isinstance(value, str | bytes) and len(value) > limit:
        return truncate(value if isinstance(value, str) else repr(value), limit)
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the ids of the request being served."""

    def __init__(self, service: str, max_value_chars: int = DEFAULT_MAX_VALUE_CHARS) -> None:
        super().__init__()
        self._service = service
        self._limit = max_value_chars

    def _message(self, record: logging.LogRecord) -> str:
        if isinstance(record.args, tuple) and record.args:
            # Each argument is cut first, so one long value leaves the rest readable.
            shortened = tuple(_short(arg, self._limit) for arg in record.args)
            try:
                text = str(record.msg) % shortened
            except (TypeError, ValueError):
                text = record.getMessage()
        else:
            text = record.getMessage()
        return truncate(text, self._limit * _MESSAGE_FACTOR)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": self._message(record),
        }
        for key, var in (
            ("request_id", request_id_var),
            ("run_id", run_id_var),
            ("step_id", step_id_var),
        ):
            value = var.get()
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = truncate(
                self.formatException(record.exc_info), self._limit * _EXCEPTION_FACTOR
            )
        return json.dumps(entry, ensure_ascii=False)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotates by size; every file it creates is 0600 whatever the process's umask
    (logs name runs and steps, and the sandbox runs with the user's umask)."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)  # a file left by an earlier run keeps its mode otherwise
        return os.fdopen(fd, "a", encoding=self.encoding)


def configure_logging(
    service: str,
    level: str = "INFO",
    *,
    file: Path | None = None,
    max_bytes: int = 10 * 1024 * 1024,
    backups: int = 3,
    max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
) -> None:
    """Sends every record to stderr (or `file`, rotated by size) as JSON lines.

    Call once, from __main__.

    Args:
        service: Named in every line.
        level: The root level.
        file: A log file; it is rotated at `max_bytes`, keeping `backups` old files.
        max_bytes: The size at which the file is rotated.
        backups: How many rotated files are kept.
        max_value_chars: Longer messages (and log arguments) are cut.
    """
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = PrivateRotatingFileHandler(
            file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
    handler.setFormatter(JsonFormatter(service, max_value_chars))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The HTTP client logs every request at INFO; that is noise next to ours.
    for noisy in ("httpx", "httpx2", "httpcore", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure_service_logging(service: str, settings: ServiceSettings) -> None:
    """`configure_logging` from a service's settings (MAESTRO_LOG_* and its LOG_FILE)."""
    configure_logging(
        service,
        settings.log_level,
        file=settings.log_file,
        max_bytes=settings.log_max_bytes,
        backups=settings.log_backups,
        max_value_chars=settings.log_max_value_chars,
    )

"""Durations as people write them in workflow files: ``250ms``, ``30s``, ``1h30m``.

ISO 8601 (``PT10M``) is accepted too, because that is how pydantic writes a
``timedelta`` to JSON; accepting it makes a stored spec load back unchanged.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

__all__ = ["format_duration", "parse_duration"]

_HINT = "use e.g. 30s, 5m, 1h30m"
# Longer text is no duration anyone writes, and parsing it would cost more than it is worth.
_MAX_TEXT_CHARS = 64

# Microseconds per unit, largest first; the order is also the order units must be
# written in, so "1m1m" or "30s5m" (almost always typos) are rejected.
_UNITS: dict[str, int] = {
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
}
_NUMBER = r"\d+(?:\.\d+)?"
_PART = re.compile(rf"({_NUMBER})(ms|[dhms])")
_COMPACT = re.compile(rf"(?:{_NUMBER}(?:ms|[dhms]))+")
_BARE = re.compile(_NUMBER)
# Years and weeks only because pydantic writes 400 days as "P1Y35D" (a year = 365 days).
# Months are not accepted: pydantic never writes them and their length is ambiguous.
_ISO = re.compile(
    rf"P(?:(?P<y>{_NUMBER})Y)?(?:(?P<w>{_NUMBER})W)?(?:(?P<d>{_NUMBER})D)?"
    rf"(?:T(?:(?P<h>{_NUMBER})H)?(?:(?P<m>{_NUMBER})M)?(?:(?P<s>{_NUMBER})S)?)?"
)
_ISO_UNITS = {"y": 365 * _UNITS["d"], "w": 7 * _UNITS["d"], **_UNITS}


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parses a positive duration.

    Args:
        value: A string such as ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h30m"`` or
            ``"2d"`` (units largest first, each at most once, decimals allowed); a
            bare number or numeric string, meaning seconds; an ISO 8601 duration
            such as ``"PT10M"``; or a ``timedelta``.

    Returns:
        The duration, rounded to the microsecond.

    Raises:
        ValueError: If the value is not a duration, is zero or negative, or is too
            long for a ``timedelta``. The message says which, and how to write one.
    """
    # bool is an int subclass; `timeout: yes` in YAML must not mean one second.
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; {_HINT}")
    if isinstance(value, timedelta):
        return _positive(value, value)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration; {_HINT}")
        if isinstance(value, int) and value.bit_length() > 64:
            # repr() of a huge integer may itself fail (int_max_str_digits).
            raise ValueError("the number is too long; the longest duration is 999999999 days")
        return _positive(value, _from_micros(value, Decimal(repr(value)) * _UNITS["s"]))
    if not isinstance(value, str):
        raise ValueError(
            f"expected a duration such as 30s, 5m or 1h30m, got {type(value).__name__}"
        )
    if len(value) > _MAX_TEXT_CHARS:
        raise ValueError(f"{_shown(value)} is not a duration; {_HINT}")
    return _positive(value, _parse_text(value))


def format_duration(value: timedelta) -> str:
    """Formats a duration the way workflow files write it.

    Args:
        value: Any ``timedelta``.

    Returns:
        A compact string such as ``"1h30m"`` or ``"250ms"`` that ``parse_duration``
        turns back into the same value (for positive durations).
    """
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if micros == 0:
        return "0s"
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    parts: list[str] = []
    for unit in ("d", "h", "m"):
        count, micros = divmod(micros, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    if micros % 1_000 == 0 and micros < 1_000_000:
        if micros:
            parts.append(f"{micros // 1_000}ms")
    else:
        seconds = str(Decimal(micros) / _UNITS["s"])
        parts.append(f"{seconds.rstrip('0').rstrip('.') if '.' in seconds else seconds}s")
    return sign + "".join(parts)


def _parse_text(text: str) -> timedelta:
    stripped = text.strip()
    negative = stripped.startswith("-")
    body = stripped.removeprefix("-")
    if _BARE.fullmatch(body):
        micros = Decimal(body) * _UNITS["s"]
    elif _COMPACT.fullmatch(body):
        micros = _compact_micros(text, body)
    elif (iso := _ISO.fullmatch(body)) and body not in ("P", "PT") and not body.endswith("T"):
        micros = sum(
            (Decimal(n) * _ISO_UNITS[unit] for unit, n in iso.groupdict().items() if n),
            Decimal(0),
        )
    else:
        raise ValueError(f"{_shown(text)} is not a duration; {_HINT}")
    if negative:
        micros = -micros
    return _from_micros(text, micros)


def _compact_micros(text: str, body: str) -> Decimal:
    order = list(_UNITS)
    last = -1
    total = Decimal(0)
    for match in _PART.finditer(body):
        number, unit = match.groups()
        position = order.index(unit)
        if position <= last:
            raise ValueError(
                f"{text!r} is not a duration: write each unit once, largest first "
                "(e.g. 1h30m, not 30m1h)"
            )
        last = position
        total += Decimal(number) * _UNITS[unit]
    return total


def _from_micros(original: object, micros: Decimal) -> timedelta:
    try:
        return timedelta(microseconds=int(micros.to_integral_value()))
    except (OverflowError, InvalidOperation):
        raise ValueError(
            f"{_shown(original)} is too long; the longest duration is 999999999 days"
        ) from None


def _positive(original: object, value: timedelta) -> timedelta:
    if value <= timedelta(0):
        kind = "zero" if value == timedelta(0) else "negative"
        raise ValueError(f"{_shown(original)} is {kind}; a duration must be positive")
    return value


def _shown(value: object) -> str:
    # A duration is short; anything longer is cut so a message never repeats much input.
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"

"""How output reaches a person: colours, terminals, and which view a run gets.

Colours follow `--color auto|always|never`: `auto` colours a terminal unless NO_COLOR is
set (https://no-color.org), `always` colours even a pipe, `never` never colours. A run
is shown as a live table redrawn in place only on a terminal and without `--plain`;
otherwise as plain lines, one per event, appended.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from typing import IO

from rich.console import Console

from maestro.text import escape_unprintable

COLOR_MODES = ("auto", "always", "never")


class ViewKind(StrEnum):
    """How `maestro run` and `maestro runs events` show a run."""

    LIVE = "live"
    PLAIN = "plain"
    JSON = "json"


def choose_view(
    *, as_json: bool, plain: bool, is_terminal: bool, env: Mapping[str, str] | None = None
) -> ViewKind:
    """JSON when asked; the live table on a terminal unless --plain (or TERM=dumb);
    plain lines otherwise."""
    env = os.environ if env is None else env
    if as_json:
        return ViewKind.JSON
    if plain or not is_terminal or env.get("TERM", "") == "dumb":
        return ViewKind.PLAIN
    return ViewKind.LIVE


def use_color(mode: str, *, is_terminal: bool, env: Mapping[str, str] | None = None) -> bool:
    """Whether to colour output, per `--color` and NO_COLOR."""
    env = os.environ if env is None else env
    if mode == "always":
        return True
    if mode == "never":
        return False
    return is_terminal and not env.get("NO_COLOR", "")


def make_console(stream: IO[str], *, color: bool, live: bool = False) -> Console:
    """A rich console on `stream`: coloured or not, and never wrapping plain lines."""
    return Console(
        file=stream,
        # A live table needs cursor movement even with colours off.
        force_terminal=bool(color or live),
        color_system="standard" if color else None,
        no_color=not color,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=not live,
    )


def printable(text: str, *, one_line: bool = False) -> str:
    """`text` with every character a terminal would act on escaped (see
    `render.terminal_safe`); newlines become spaces too when `one_line`."""
    if one_line:
        text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return escape_unprintable(text, keep="\n\t")

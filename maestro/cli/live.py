"""Following a run: the live table on a terminal, plain lines elsewhere, NDJSON for scripts.

`RunTracker` folds a run's events (and, on a terminal, a fresh GetRun every few
seconds for the tokens spent so far) into one row per step; it is pure and tested on
its own. The views show it:

    ▶ runs/5f0c…  sdlc-parallel  RUNNING  1m02s  12.3k tokens  $0.0412  (anthropic)
       STEP          PERSONA               STATE      TRY  ELAPSED  TOKENS  LATEST
    ✓  requirements  requirements_analyst  SUCCEEDED    1    14.2s    6.1k  3 files
    ▶  backend       backend_developer     RUNNING      1    48.0s    6.2k  waiting for the
                                                                            model: no output
                                                                            for 42s
    ·  testing       qa_engineer           PENDING      -        -       -

(with a COST column too). The live view redraws that table in place; the plain view
prints one line per event (`EventFormatter`), appended, and says when a running step
has been quiet for long.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import IO, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from maestro.cli.models import EventView, RunView, TokenUsageView
from maestro.cli.render import (
    EventFormatter,
    event_to_dict,
    format_cost,
    format_count,
    format_duration,
    json_line,
    plural,
)
from maestro.cli.terminal import printable

# A running step with no progress note for this long gets a notice: the worker notes
# every few seconds while a model writes, so this much silence is worth saying.
QUIET_AFTER = timedelta(seconds=20)
# The plain view repeats its notice at most this often per step.
PLAIN_QUIET_EVERY = timedelta(seconds=60)
REFRESH_SECONDS = 1.0
USAGE_POLL_SECONDS = 2.0

SYMBOLS = {
    "PENDING": "·",
    "QUEUED": "◷",
    "RUNNING": "▶",
    "RETRYING": "↻",
    "WAITING_APPROVAL": "?",
    "SUCCEEDED": "✓",
    "FAILED": "✗",
    "BLOCKED": "⊘",
    "CANCELLED": "■",
    "SKIPPED": "-",
}
STYLES = {
    "QUEUED": "yellow",
    "RUNNING": "cyan",
    "RETRYING": "yellow",
    "WAITING_APPROVAL": "magenta",
    "SUCCEEDED": "green",
    "FAILED": "bold red",
    "BLOCKED": "red",
    "CANCELLED": "yellow",
    "PENDING": "dim",
    "SKIPPED": "dim",
}
_MODEL_WORDS = ("calling", "writing", "no output from", "turn ")


def _int(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        return 0


def _float(value: str | None) -> float:
    try:
        return float(value or "")
    except ValueError:
        return 0.0


def usage_of(attributes: dict[str, str]) -> TokenUsageView:
    """The usage an event reports in its attributes (STEP_SUCCEEDED, ATTEMPT_LOST)."""
    return TokenUsageView(
        input_tokens=_int(attributes.get("input_tokens")),
        output_tokens=_int(attributes.get("output_tokens")),
        cache_read_tokens=_int(attributes.get("cache_read_tokens")),
        cache_write_tokens=_int(attributes.get("cache_write_tokens")),
        cost_usd=_float(attributes.get("cost_usd")),
    )


@dataclass
class StepRow:
    """What the views show of one step."""

    step_id: str
    persona: str
    state: str = "PENDING"
    attempt: int = 0
    round: int = 0
    started: datetime | None = None
    ended: datetime | None = None
    last_progress: datetime | None = None
    note: str = ""
    provider: str = ""
    model: str = ""
    files: int = 0
    usage: TokenUsageView = field(default_factory=TokenUsageView)
    polled: TokenUsageView | None = None

    @property
    def spent(self) -> TokenUsageView:
        """The larger of what events reported and what the last GetRun said."""
        if self.polled is not None and self.polled.total_tokens >= self.usage.total_tokens:
            return self.polled
        return self.usage

    def elapsed(self, now: datetime) -> timedelta | None:
        """From the first attempt's start to the end (or now)."""
        if self.started is None:
            return None
        return (self.ended or now) - self.started

    def quiet_for(self, now: datetime) -> timedelta | None:
        """How long a running step has said nothing, once that is worth saying."""
        if self.state != "RUNNING" or self.last_progress is None:
            return None
        quiet = now - self.last_progress
        return quiet if quiet >= QUIET_AFTER else None

    def quiet_notice(self, quiet: timedelta) -> str:
        """`waiting for the model: no output for 2m10s`, or `no progress for ...`."""
        waiting_for_model = any(word in self.note for word in _MODEL_WORDS)
        what = "waiting for the model: no output" if waiting_for_model else "no progress"
        return f"{what} for {format_duration(quiet)}"


class RunTracker:
    """A run's steps as its events describe them. Pure: no I/O, no clock."""

    def __init__(self, run: RunView) -> None:
        self.name = run.name
        self.workflow = run.workflow
        self.state = run.state
        self.provider = run.provider
        self.error = run.error
        self.created = run.create_time
        self.started = run.start_time
        self.ended = run.end_time
        self.rows: dict[str, StepRow] = {
            s.step_id: StepRow(step_id=s.step_id, persona=s.persona or s.kind, state=s.state)
            for s in run.steps
        }
        # Approval steps' questions, by step (from APPROVAL_REQUESTED).
        self.prompts: dict[str, str] = {}

    def waiting(self) -> list[str]:
        """Steps that wait for a person's decision now."""
        return [r.step_id for r in self.rows.values() if r.state == "WAITING_APPROVAL"]

    def row(self, step_id: str) -> StepRow:
        """The step's row (a step the run did not list at creation gets one too)."""
        row = self.rows.get(step_id)
        if row is None:
            row = self.rows[step_id] = StepRow(step_id=step_id, persona="")
        return row

    @property
    def usage(self) -> TokenUsageView:
        """What every step has spent so far."""
        total = TokenUsageView()
        for row in self.rows.values():
            total = total + row.spent
        return total

    def elapsed(self, now: datetime) -> timedelta | None:
        """The run's time so far (or in all, once it ended)."""
        begin = self.started or self.created
        if begin is None:
            return None
        return (self.ended or now) - begin

    def apply(self, event: EventView) -> None:
        """Folds one event into the rows."""
        attrs = event.attributes
        kind = event.type
        if kind == "RUN_STARTED":
            self.state = "RUNNING"
            self.started = self.started or event.time
            return
        if kind == "RUN_QUEUED":
            self.state = "QUEUED"
            return
        if kind in ("RUN_SUCCEEDED", "RUN_FAILED", "RUN_CANCELLED"):
            self.state = kind.removeprefix("RUN_")
            self.ended = event.time
            self.error = attrs.get("error", "") or self.error
            return
        if not event.step_id:
            return
        row = self.row(event.step_id)
        if attrs.get("round"):
            row.round = _int(attrs["round"])
        provider = attrs.get("provider", "")
        if provider:
            row.provider = provider
            self.provider = self.provider or provider
        if kind == "STEP_STARTED":
            row.state = "RUNNING"
            row.attempt = _int(attrs.get("attempt")) or row.attempt + 1
            row.persona = row.persona or attrs.get("persona", "")
            row.started = row.started or event.time
            row.ended = None
            row.last_progress = event.time
            row.note = f"attempt {row.attempt} started"
        elif kind == "STEP_PROGRESS":
            row.last_progress = event.time
            row.note = event.message
        elif kind == "STEP_QUEUED":
            row.state = "QUEUED"
            row.note = attrs.get("reason") or event.message
        elif kind == "ARTIFACT_RECORDED":
            row.files += 1
            row.last_progress = event.time
        elif kind == "STEP_SUCCEEDED":
            row.state = "SUCCEEDED"
            row.ended = event.time
            row.usage = row.usage + usage_of(attrs)
            row.model = attrs.get("model", "") or row.model
            files = _int(attrs.get("files")) if "files" in attrs else row.files
            # The model says more than the provider (the header names the provider).
            made_by = row.model or row.provider
            row.note = plural(files, "file") + (f" · {made_by}" if made_by else "")
            if "files" not in attrs and event.message:
                # A gate or an approval writes nothing: its message says what happened.
                row.note = event.message.removeprefix(f"{event.step_id} ")
        elif kind in ("STEP_RETRY_SCHEDULED", "ATTEMPT_LOST"):
            row.state = "RETRYING"
            row.usage = row.usage + usage_of(attrs)
            reason = attrs.get("reason") or event.message
            again = attrs.get("retry_in_seconds")
            lost = "lost" if kind == "ATTEMPT_LOST" else "failed"
            row.note = f"attempt {row.attempt} {lost}: {reason}"
            if again:
                row.note += f" (again in {format_duration(timedelta(seconds=_float(again)))})"
        elif kind in ("STEP_FAILED", "STEP_BLOCKED", "STEP_CANCELLED"):
            row.state = kind.removeprefix("STEP_")
            row.ended = event.time if row.started else None
            row.note = attrs.get("error") or attrs.get("reason") or event.message
        elif kind == "APPROVAL_REQUESTED":
            row.state = "WAITING_APPROVAL"
            row.note = "waiting for your decision"
            self.prompts[event.step_id] = attrs.get("prompt", "")
        elif kind == "GATE_EVALUATED":
            row.note = event.message
        elif kind in ("STEP_APPROVED", "STEP_REJECTED"):
            row.state = "SUCCEEDED" if kind == "STEP_APPROVED" else "RUNNING"
            row.note = event.message.removeprefix(f"{event.step_id} ")
        elif event.message:
            # Kinds this client does not know yet: say what they say.
            row.note = event.message.removeprefix(f"{event.step_id} ")

    def refresh(self, run: RunView) -> None:
        """Takes the tokens spent so far from a fresh GetRun (events report them only
        when an attempt ends)."""
        for step in run.steps:
            self.row(step.step_id).polled = step.usage
        if run.is_final:
            self.state = run.state
            self.ended = run.end_time or self.ended


def _state_text(state: str) -> Text:
    return Text(f"{SYMBOLS.get(state, '•')}", style=STYLES.get(state, ""))


def render(tracker: RunTracker, now: datetime) -> RenderableType:
    """The run's header and its table of steps, as of `now`."""
    usage = tracker.usage
    header = Text()
    header.append(f"{SYMBOLS.get(tracker.state, '●')} ", style=STYLES.get(tracker.state, ""))
    header.append(tracker.name, style="bold")
    header.append(f"  {tracker.workflow}  ")
    header.append(tracker.state, style=STYLES.get(tracker.state, "bold"))
    header.append(f"  {format_duration(tracker.elapsed(now))}")
    header.append(f"  {format_count(usage.total_tokens)} tokens  {format_cost(usage.cost_usd)}")
    if tracker.provider:
        header.append(f"  ({tracker.provider})", style="dim")
    table = Table(box=None, pad_edge=False, expand=True, show_edge=False)
    table.add_column("", no_wrap=True, width=1)
    table.add_column("STEP", no_wrap=True)
    table.add_column("PERSONA", no_wrap=True, overflow="ellipsis", max_width=22)
    table.add_column("STATE", no_wrap=True)
    table.add_column("TRY", no_wrap=True, justify="right")
    table.add_column("ELAPSED", no_wrap=True, justify="right")
    table.add_column("TOKENS", no_wrap=True, justify="right")
    table.add_column("COST", no_wrap=True, justify="right")
    table.add_column("LATEST", no_wrap=True, overflow="ellipsis", ratio=1)
    for row in tracker.rows.values():
        quiet = row.quiet_for(now)
        latest = Text(
            printable(row.note, one_line=True), style="dim" if row.state == "SUCCEEDED" else ""
        )
        if quiet is not None:
            latest = Text(row.quiet_notice(quiet), style="yellow")
        elif row.state in ("FAILED", "BLOCKED"):
            latest.stylize("red")
        spent = row.spent
        attempt = str(row.attempt) if row.attempt else "-"
        if row.round:
            attempt += f" r{row.round}"
        table.add_row(
            _state_text(row.state),
            printable(row.step_id, one_line=True),
            printable(row.persona, one_line=True),
            Text(row.state, style=STYLES.get(row.state, "")),
            attempt,
            format_duration(row.elapsed(now)),
            format_count(spent.total_tokens) if spent.total_tokens else "-",
            format_cost(spent.cost_usd) if spent.cost_usd else "-",
            latest,
        )
    hints = [
        Text(line, style="bold magenta")
        for step_id in tracker.waiting()
        for line in decision_hint(tracker.name, step_id, tracker.prompts.get(step_id, ""))
    ]
    return Group(header, table, *hints)


def decision_hint(run: str, step_id: str, prompt: str) -> list[str]:
    """What to run to decide a waiting step: shown under the table, not in a corner."""
    run_id = run.removeprefix("runs/")
    question = f": {printable(prompt, one_line=True)}" if prompt else ""
    return [
        f"? {step_id} waits for your decision{question}",
        f"    approve: maestro runs approve {run_id} {step_id} [--comment TEXT]",
        f"    reject:  maestro runs reject {run_id} {step_id} --comment TEXT",
    ]


class Clock(Protocol):
    """Where the views read the time (tests pass a fixed one)."""

    def __call__(self) -> datetime: ...


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class View(Protocol):
    """What following a run needs of a view (used as an async context manager)."""

    tracker: RunTracker

    def event(self, event: EventView) -> None:
        """Shows one event."""

    def refresh(self, run: RunView) -> None:
        """Takes a fresh GetRun (the tokens spent so far)."""

    def note(self, text: str) -> None:
        """Shows a notice that is not an event."""

    async def __aenter__(self) -> View: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def _stderr(text: str) -> None:
    print(printable(text), file=sys.stderr, flush=True)


class JsonLines:
    """`--json`: each event as one JSON object on stdout, unchanged."""

    def __init__(self, tracker: RunTracker, stream: IO[str] | None = None) -> None:
        self.tracker = tracker
        self._stream = stream or sys.stdout

    async def __aenter__(self) -> JsonLines:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def note(self, text: str) -> None:
        _stderr(text)

    def event(self, event: EventView) -> None:
        self.tracker.apply(event)
        print(json_line(event_to_dict(event)), file=self._stream, flush=True)

    def refresh(self, run: RunView) -> None:
        self.tracker.refresh(run)


class PlainLines:
    """One line per event, appended; a notice when a running step goes quiet."""

    def __init__(self, tracker: RunTracker, console: Console, clock: Clock = utc_now) -> None:
        self.tracker = tracker
        self._console = console
        self._clock = clock
        self._formatter = EventFormatter()
        self._noticed: dict[str, datetime] = {}
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PlainLines:
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)

    def note(self, text: str) -> None:
        _stderr(text)

    def event(self, event: EventView) -> None:
        self.tracker.apply(event)
        line = printable(self._formatter.format(event), one_line=True)
        state = {
            "STEP_SUCCEEDED": "SUCCEEDED",
            "STEP_FAILED": "FAILED",
            "STEP_BLOCKED": "BLOCKED",
            "STEP_CANCELLED": "CANCELLED",
            "STEP_RETRY_SCHEDULED": "RETRYING",
            "ATTEMPT_LOST": "RETRYING",
            "RUN_SUCCEEDED": "SUCCEEDED",
            "RUN_FAILED": "FAILED",
            "RUN_CANCELLED": "CANCELLED",
        }.get(event.type, "")
        self._console.print(Text(line, style=STYLES.get(state, "")))
        if event.type == "APPROVAL_REQUESTED":
            prompt = event.attributes.get("prompt", "")
            for hint in decision_hint(self.tracker.name, event.step_id, prompt):
                self._console.print(Text(hint, style="bold magenta"))

    def refresh(self, run: RunView) -> None:
        self.tracker.refresh(run)

    def notices(self, now: datetime) -> list[str]:
        """Lines for steps that have been quiet long (at most one a minute per step)."""
        lines = []
        for row in self.tracker.rows.values():
            quiet = row.quiet_for(now)
            if quiet is None:
                continue
            last = self._noticed.get(row.step_id)
            if last is not None and now - last < PLAIN_QUIET_EVERY:
                continue
            self._noticed[row.step_id] = now
            clock = now.astimezone().strftime("%H:%M:%S")
            lines.append(f"{clock}  {row.step_id:<20}  {row.quiet_notice(quiet)}")
        return lines

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            for line in self.notices(self._clock()):
                self._console.print(Text(line, style="yellow"))


class LiveTable:
    """The table of steps, redrawn in place about once a second and on every event."""

    def __init__(self, tracker: RunTracker, console: Console, clock: Clock = utc_now) -> None:
        self.tracker = tracker
        self._console = console
        self._clock = clock
        self._live = Live(
            render(tracker, clock()),
            console=console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveTable:
        self._live.start(refresh=True)
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        # The final state stays on the screen, drawn once more.
        self.redraw()
        self._live.stop()

    def redraw(self) -> None:
        """Draws the table as of now."""
        self._live.update(render(self.tracker, self._clock()), refresh=True)

    def note(self, text: str) -> None:
        """Prints a line above the table (a notice that must not be redrawn away)."""
        self._live.console.print(Text(printable(text)))

    def event(self, event: EventView) -> None:
        self.tracker.apply(event)
        self.redraw()

    def refresh(self, run: RunView) -> None:
        self.tracker.refresh(run)
        self.redraw()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            self.redraw()

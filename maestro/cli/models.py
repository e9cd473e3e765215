"""Plain models of what the gateway returns, as the command line sees them.

The gateway client converts protobuf into these (see `convert`), so rendering and
command logic never touch protobuf. States and event types are the enum names without
their prefix (`SUCCEEDED`, `STEP_STARTED`); unknown future values keep their number
(`UNKNOWN_42`) instead of failing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from maestro.core.errors import InvalidArgument

RUN_PREFIX = "runs/"

TERMINAL_EVENT_TYPES = frozenset({"RUN_SUCCEEDED", "RUN_FAILED", "RUN_CANCELLED"})
FINAL_RUN_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class TokenUsageView(_Frozen):
    """Tokens billed for a step (or a whole run), and what they cost."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        """Every billed token: input, output, cache reads and cache writes."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def __add__(self, other: TokenUsageView) -> TokenUsageView:
        return TokenUsageView(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


class GateMetricView(_Frozen):
    """One metric a gate judged."""

    metric: str
    value: float | None
    threshold: str
    passed: bool


class StepView(_Frozen):
    """One step of a run."""

    step_id: str
    persona: str
    depends_on: tuple[str, ...] = ()
    state: str
    attempts: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    error: str = ""
    summary: str = ""
    usage: TokenUsageView = TokenUsageView()
    provider: str = ""
    model: str = ""
    kind: str = "persona"
    round: int = 0
    gate_metrics: tuple[GateMetricView, ...] = ()

    @property
    def duration(self) -> timedelta | None:
        """How long the step took, when it has both a start and an end."""
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


class RunView(_Frozen):
    """A run of a workflow with its steps."""

    name: str
    workflow: str
    requirement: str = ""
    state: str
    steps: tuple[StepView, ...] = ()
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    error: str = ""
    provider: str = ""

    @property
    def id(self) -> str:
        """The run id: the name without `runs/`."""
        return run_id(self.name)

    @property
    def is_final(self) -> bool:
        """Whether the run has reached SUCCEEDED, FAILED or CANCELLED."""
        return self.state in FINAL_RUN_STATES

    @property
    def duration(self) -> timedelta | None:
        """Start to end (or create to end when it never started)."""
        begin = self.start_time or self.create_time
        if begin is None or self.end_time is None:
            return None
        return self.end_time - begin

    @property
    def total_usage(self) -> TokenUsageView:
        """Tokens summed over every step."""
        total = TokenUsageView()
        for step in self.steps:
            total = total + step.usage
        return total


class EventView(_Frozen):
    """One entry of a run's event log."""

    run: str
    sequence: int
    type: str
    step_id: str = ""
    time: datetime | None = None
    message: str = ""
    attributes: dict[str, str] = {}

    @property
    def is_terminal(self) -> bool:
        """Whether this event ends the run (and so the event stream)."""
        return self.type in TERMINAL_EVENT_TYPES


class ArtifactView(_Frozen):
    """A file a step produced; `content` is empty unless it was fetched."""

    name: str
    path: str
    step_id: str = ""
    size_bytes: int = 0
    sha256: str = ""
    create_time: datetime | None = None
    content: bytes = b""
    version: int = 0
    attempt: int = 0
    round: int = 0
    latest: bool = True


def run_name(run: str) -> str:
    """Accepts a run id or `runs/<id>` and returns the resource name `runs/<id>`.

    Raises:
        InvalidArgument: the id is empty or contains a `/`.
    """
    ident = run_id(run.strip())
    if not ident or "/" in ident:
        raise InvalidArgument("run", f"{run!r} is not a run id or a name like runs/<id>")
    return f"{RUN_PREFIX}{ident}"


def run_id(name: str) -> str:
    """Accepts `runs/<id>` or a bare id and returns the id."""
    return name.removeprefix(RUN_PREFIX)

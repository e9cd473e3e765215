"""Text and JSON output of the command line, from plain models only.

JSON times are RFC 3339 in UTC with microseconds (`2026-11-24T18:42:12.123456Z`);
text output shows local times with seconds (`2026-11-24 19:42:12`), sizes and
durations for people, and counts with the right plural ("1 file", "2 files").

Everything printed passes through `terminal_safe` (text) or `json_line` (JSON), which
escape control, bidi and other invisible characters: names, messages and paths come
from other users and from models, and an escape sequence in them must not reach the
terminal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from maestro.cli.models import ArtifactView, EventView, RunView, StepView, TokenUsageView
from maestro.personas import Persona
from maestro.text import escape_unprintable, is_printable_char

JsonDict = dict[str, Any]


def rfc3339(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z` and microseconds; None stays None."""
    if value is None:
        return None
    if value.tzinfo is None:
        # Every time from the gateway is aware; a naive one would be a bug upstream,
        # and reading it as UTC is the only interpretation that round-trips.
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_duration(value: timedelta | None) -> str:
    """`35ms`, `12.3s`, `2m05s`, `1h02m`; `-` when unknown."""
    if value is None:
        return "-"
    seconds = max(0.0, value.total_seconds())
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_size(size: int) -> str:
    """`812 B`, `1.2 KiB`, `3.4 MiB`."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 file`, `2 files`, `0 files` (`many` for irregular plurals)."""
    return f"{count:,} {noun if count == 1 else (many or noun + 's')}"


def local_time(value: datetime | None) -> str:
    """`2026-11-24 19:42:12` in this machine's time zone; `-` when unknown."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_cost(usd: float) -> str:
    """`$0.0123` (four decimals below a dollar, two above)."""
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}"


def format_count(tokens: int) -> str:
    """`812`, `12.3k`, `1.2M`: a token count that fits a table cell."""
    if tokens < 1000:
        return str(tokens)
    if tokens < 1_000_000:
        return f"{tokens / 1000:.1f}k"
    return f"{tokens / 1_000_000:.1f}M"


def format_tokens(usage: TokenUsageView) -> str:
    """`1,234 in + 567 out = 1,801 tokens`, with cache tokens and the cost when any."""
    total = usage.input_tokens + usage.output_tokens
    text = f"{usage.input_tokens:,} in + {usage.output_tokens:,} out = {total:,} tokens"
    if usage.cache_read_tokens or usage.cache_write_tokens:
        text += (
            f" (+ {usage.cache_read_tokens:,} cache reads, "
            f"{usage.cache_write_tokens:,} cache writes)"
        )
    if usage.cost_usd:
        text += f", {format_cost(usage.cost_usd)}"
    return text


def terminal_safe(text: str) -> str:
    """`text` with every character a terminal would act on escaped (newlines and tabs kept)."""
    return escape_unprintable(text, keep="\n\t")


def json_line(value: Mapping[str, Any]) -> str:
    """One compact JSON object on one line (for JSON-lines output).

    Non-ASCII text stays readable; unprintable characters are \\u-escaped (JSON
    escapes only C0 controls itself).
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if text.isprintable():
        return text
    return "".join(
        ch if is_printable_char(ch) else json.dumps(ch, ensure_ascii=True)[1:-1] for ch in text
    )


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds(), 6)


def usage_to_dict(usage: TokenUsageView) -> JsonDict:
    """Token usage and its cost as JSON."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cost_usd": round(usage.cost_usd, 6),
    }


def step_to_dict(step: StepView) -> JsonDict:
    """A step as JSON."""
    return {
        "step_id": step.step_id,
        "persona": step.persona,
        "depends_on": list(step.depends_on),
        "state": step.state,
        "attempts": step.attempts,
        "start_time": rfc3339(step.start_time),
        "end_time": rfc3339(step.end_time),
        "duration_seconds": _seconds(step.duration),
        "error": step.error,
        "summary": step.summary,
        "kind": step.kind,
        "round": step.round,
        "gate_metrics": [m.model_dump() for m in step.gate_metrics],
        "provider": step.provider,
        "model": step.model,
        "usage": usage_to_dict(step.usage),
    }


def run_to_dict(run: RunView) -> JsonDict:
    """A run with its steps as JSON."""
    return {
        "name": run.name,
        "id": run.id,
        "workflow": run.workflow,
        "requirement": run.requirement,
        "state": run.state,
        "error": run.error,
        "provider": run.provider,
        "create_time": rfc3339(run.create_time),
        "start_time": rfc3339(run.start_time),
        "end_time": rfc3339(run.end_time),
        "duration_seconds": _seconds(run.duration),
        "usage": usage_to_dict(run.total_usage),
        "steps": [step_to_dict(s) for s in run.steps],
    }


def event_to_dict(event: EventView) -> JsonDict:
    """An event as JSON; `step` is present only for events that belong to a step."""
    out: JsonDict = {"run": event.run, "sequence": event.sequence, "type": event.type}
    if event.step_id:
        out["step"] = event.step_id
    out["time"] = rfc3339(event.time)
    out["message"] = event.message
    out["attributes"] = dict(event.attributes)
    return out


def _local_clock(value: datetime | None) -> str:
    return "--:--:--" if value is None else value.astimezone().strftime("%H:%M:%S")


def _int_attr(attrs: Mapping[str, str], key: str) -> int | None:
    try:
        return int(attrs[key])
    except (KeyError, ValueError):
        return None


def _reason(event: EventView) -> str:
    attrs = event.attributes
    return attrs.get("error") or attrs.get("reason") or event.message


class EventFormatter:
    """Turns events into one readable line each.

    It remembers when each step first started, so a success line can say how long
    the step took even when the event carries no duration of its own.
    """

    def __init__(self, step_width: int = 20) -> None:
        """Args: step_width: column width for step ids (longer ids are not cut)."""
        self._step_width = step_width
        self._started: dict[str, datetime] = {}

    def format(self, event: EventView) -> str:
        """`18:42:12  architect             succeeded in 1.4s (offline, 300 tokens)`."""
        if event.type == "STEP_STARTED" and event.time is not None and event.step_id:
            self._started.setdefault(event.step_id, event.time)
        step = event.step_id or "run"
        return f"{_local_clock(event.time)}  {step:<{self._step_width}}  {self._what(event)}"

    def _duration(self, event: EventView) -> timedelta | None:
        millis = _int_attr(event.attributes, "duration_ms")
        if millis is not None:
            return timedelta(milliseconds=millis)
        started = self._started.get(event.step_id)
        if started is None or event.time is None:
            return None
        return event.time - started

    def _what(self, event: EventView) -> str:
        attrs = event.attributes
        kind = event.type
        if kind == "STEP_STARTED":
            parts = [attrs["persona"]] if attrs.get("persona") else []
            parts += [f"attempt {attrs['attempt']}"] if attrs.get("attempt") else []
            if attrs.get("requested_provider"):
                parts.append(f"provider {attrs['requested_provider']}")
            return "started" + (f" ({', '.join(parts)})" if parts else "")
        if kind == "ARTIFACT_RECORDED":
            size = _int_attr(attrs, "size_bytes")
            path = attrs.get("path") or event.message
            return f"wrote {path}" + (f" ({format_size(size)})" if size is not None else "")
        if kind == "STEP_SUCCEEDED":
            detail = [_provider_model(attrs.get("provider", ""), attrs.get("model", ""))]
            detail = [d for d in detail if d]
            tokens = [_int_attr(attrs, k) for k in ("input_tokens", "output_tokens")]
            if any(t is not None for t in tokens):
                detail.append(f"{sum(t or 0 for t in tokens):,} tokens")
            took = self._duration(event)
            text = "succeeded" + (f" in {format_duration(took)}" if took is not None else "")
            return text + (f" ({', '.join(detail)})" if detail else "")
        if kind == "STEP_RETRY_SCHEDULED":
            attempt = f" (attempt {attrs['attempt']} failed)" if "attempt" in attrs else ""
            return f"retry scheduled{attempt}: {_reason(event)}"
        if kind in ("STEP_FAILED", "STEP_BLOCKED", "RUN_FAILED"):
            failed = {
                "STEP_FAILED": "FAILED",
                "STEP_BLOCKED": "blocked",
                "RUN_FAILED": "run FAILED",
            }
            return f"{failed[kind]}: {_reason(event)}"
        if kind == "STEP_PROGRESS":
            return f"progress: {event.message}"
        simple = {
            "RUN_CREATED": "run created",
            "RUN_STARTED": "run started",
            "STEP_CANCELLED": "cancelled",
            "RUN_SUCCEEDED": "run SUCCEEDED",
            "RUN_CANCELLED": "run CANCELLED",
        }
        label = simple.get(kind, kind.lower().replace("_", " "))
        # The step id is already in its own column.
        message = (
            event.message.removeprefix(f"{event.step_id} ") if event.step_id else event.message
        )
        if not message or message.lower() == label.lower():
            return label
        # Servers tend to phrase messages as "run created: ..."; don't say it twice.
        return message if message.lower().startswith(label.lower()) else f"{label}: {message}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> list[str]:
    body = [list(r) for r in rows]
    widths = [max(len(cell) for cell in col) for col in zip(header, *body, strict=False)]
    lines = []
    for row in [list(header), *body]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _provider_model(provider: str, model: str) -> str:
    """`anthropic (claude-x)`; just `offline` when the model says nothing more."""
    if provider and model and model != provider:
        return f"{provider} ({model})"
    return provider or model


def _step_provider(step: StepView) -> str:
    return _provider_model(step.provider, step.model) or "-"


def format_run(run: RunView, *, artifacts_dir: str | None = None, artifacts: int = 0) -> str:
    """A run's summary: state, each step, the error, where the artifacts are, tokens."""
    took = run.duration
    head = f"Run {run.name}: {run.state}" + (f" in {format_duration(took)}" if took else "")
    lines = [f"{head} (workflow {run.workflow})"]
    if run.steps:
        rows = [
            (
                s.step_id,
                s.persona or s.kind,
                s.state,
                str(s.attempts),
                format_duration(s.duration),
                _step_provider(s),
            )
            for s in run.steps
        ]
        header = ("STEP", "PERSONA", "STATE", "ATTEMPTS", "DURATION", "PROVIDER")
        lines += _table(header, rows, indent="  ")
        lines += [f"  {s.step_id}: {s.error}" for s in run.steps if s.error]
    if run.error:
        # "Failed:", "Cancelled:": the run's own reason, not an error of this command.
        lines.append(f"{run.state.capitalize()}: {run.error}")
    if artifacts_dir is not None:
        lines.append(f"Artifacts: {artifacts_dir} ({plural(artifacts, 'file')})")
    lines.append(f"Tokens: {format_tokens(run.total_usage)}")
    # Last: what the gates measured is what the run's result rests on.
    lines += gate_lines(run)
    return "\n".join(lines)


def format_artifact_versions(versions: Sequence[ArtifactView]) -> str:
    """Every version of every path: who wrote it, when in the run, and which is read."""
    rows = [
        (
            a.path,
            str(a.version),
            a.step_id,
            str(a.round),
            str(a.attempt),
            format_size(a.size_bytes),
            a.sha256[:12],
            "latest" if a.latest else "",
        )
        for a in versions
    ]
    header = ("PATH", "VERSION", "STEP", "ROUND", "ATTEMPT", "SIZE", "SHA256", "")
    return "\n".join(_table(header, rows)) if rows else "no artifacts"


def artifact_version_to_dict(artifact: ArtifactView) -> JsonDict:
    """One version of an artifact as JSON."""
    return {
        "path": artifact.path,
        "version": artifact.version,
        "step": artifact.step_id,
        "round": artifact.round,
        "attempt": artifact.attempt,
        "size_bytes": artifact.size_bytes,
        "sha256": artifact.sha256,
        "latest": artifact.latest,
        "create_time": rfc3339(artifact.create_time),
    }


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_outcome(run: RunView, *, artifacts_dir: str | None = None, artifacts: int = 0) -> str:
    """The lines under a live table: how the run ended, why, where its files are, spend."""
    took = f" in {format_duration(run.duration)}" if run.duration else ""
    done = sum(s.state == "SUCCEEDED" for s in run.steps)
    lines = [
        f"Run {run.name}: {run.state}{took} ({done} of {plural(len(run.steps), 'step')} succeeded)"
    ]
    lines += [f"  {s.step_id}: {s.error}" for s in run.steps if s.error]
    if run.error:
        lines.append(f"{run.state.capitalize()}: {run.error}")
    if artifacts_dir is not None:
        lines.append(f"Artifacts: {artifacts_dir} ({plural(artifacts, 'file')})")
    lines.append(f"Tokens: {format_tokens(run.total_usage)}")
    # Last: what the gates measured is what the run's result rests on.
    lines += gate_lines(run)
    return "\n".join(lines)


def gate_lines(run: RunView) -> list[str]:
    """Each gate's last verdict: every metric, its threshold, and whether it held."""
    lines: list[str] = []
    for step in run.steps:
        if not step.gate_metrics:
            continue
        passed = all(m.passed for m in step.gate_metrics) and step.state == "SUCCEEDED"
        rounds = f", after {plural(step.round, 'rework round')}" if step.round else ""
        lines.append(f"Gate {step.step_id}: {'passed' if passed else 'failed'}{rounds}")
        rows = [
            (
                m.metric,
                "missing" if m.value is None else f"{m.value:g}",
                m.threshold,
                "ok" if m.passed else "MISSED",
            )
            for m in step.gate_metrics
        ]
        lines += _table(("METRIC", "VALUE", "THRESHOLD", "VERDICT"), rows, indent="  ")
    return lines


def format_run_list(runs: Sequence[RunView], requirement_width: int = 40) -> str:
    """One line per run: id, state, workflow, created (local time), duration, requirement."""
    if not runs:
        return "no runs"
    rows = [
        (
            r.id,
            r.state,
            r.workflow,
            local_time(r.create_time),
            format_duration(r.duration),
            _one_line(r.requirement, requirement_width),
        )
        for r in runs
    ]
    header = ("RUN", "STATE", "WORKFLOW", "CREATED", "DURATION", "REQUIREMENT")
    return "\n".join(_table(header, rows))


def format_personas(personas: Iterable[Persona]) -> str:
    """Each persona with its role and deliverables."""
    lines: list[str] = []
    for persona in personas:
        lines.append(f"{persona.name}: {persona.role}")
        for d in persona.deliverables:
            lines.append(f"    {d.path:<24} {d.kind.value:<9} {d.description}")
    return "\n".join(lines)


def persona_to_dict(persona: Persona) -> JsonDict:
    """A persona as JSON: name, role, mode and deliverables (not its prompt)."""
    return {
        "name": persona.name,
        "role": persona.role,
        "mode": str(persona.mode.value),
        "deliverables": [
            {"path": d.path, "kind": d.kind.value, "description": d.description}
            for d in persona.deliverables
        ],
    }


class StepLike(Protocol):
    """What `format_workflow` needs of a workflow step."""

    @property
    def id(self) -> str: ...
    @property
    def persona(self) -> str: ...
    @property
    def depends_on(self) -> Sequence[str]: ...


class WorkflowLike(Protocol):
    """What `format_workflow` needs of a workflow spec."""

    @property
    def name(self) -> str: ...
    @property
    def steps(self) -> Sequence[StepLike]: ...


def format_workflow(spec: WorkflowLike) -> str:
    """`ok: <name>: N steps` and the step graph, one step per line with its inputs."""
    steps = list(spec.steps)
    lines = [f"ok: {spec.name}: {plural(len(steps), 'step')}"]
    width = max((len(s.id) for s in steps), default=0)
    for step in steps:
        after = f"  <- {', '.join(step.depends_on)}" if step.depends_on else ""
        # A gate has no persona: it says what it checks.
        what = step.persona or "gate: " + ", ".join(getattr(step, "checks", ()))
        lines.append(f"  {step.id:<{width}}  ({what}){after}")
    return "\n".join(lines)


_BREAKERS = {1: "closed", 2: "half-open", 3: "open"}


def _use(model: Any, dimension: str) -> str:
    limit = getattr(model, f"{dimension}_limit")
    if not model.HasField(f"{dimension}_used"):
        return f"{limit:g} (shared)"
    return f"{getattr(model, f'{dimension}_used'):g} of {limit:g}"


def format_capacity(capacity: Any) -> str:
    """`maestro status`: per model, its breaker, what the window holds of each limit, a
    429's pause and the calls that wait."""
    lines = [f"scheduler {capacity.scheduler} (each scheduler keeps its own circuit breakers)"]
    if not capacity.models:
        lines.append("no model calls admitted yet")
        return "\n".join(lines)
    rows = []
    for model in capacity.models:
        breaker = _BREAKERS.get(model.breaker, "unknown")
        if model.overloads:
            breaker += f" ({model.overloads} overloads)"
        paused = (
            local_time(model.paused_until.ToDatetime(tzinfo=UTC))
            if model.HasField("paused_until")
            else "-"
        )
        rows.append(
            (
                model.model,
                breaker,
                _use(model, "requests"),
                _use(model, "input_tokens"),
                _use(model, "output_tokens"),
                paused,
                str(model.waiting_calls),
            )
        )
    header = (
        "MODEL",
        "BREAKER",
        "REQUESTS/MIN",
        "INPUT TOKENS/MIN",
        "OUTPUT TOKENS/MIN",
        "PAUSED UNTIL",
        "WAITING",
    )
    return "\n".join([*lines, *_table(header, rows)])


def capacity_to_dict(capacity: Any) -> JsonDict:
    """`maestro status --json`: the gateway's Capacity message as JSON."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(capacity, preserving_proto_field_name=True)

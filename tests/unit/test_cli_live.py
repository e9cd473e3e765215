"""The live view's logic: events folded into rows, the quiet-model notice, the table as
text, and which view and colours a command gets."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from maestro.cli.live import PlainLines, RunTracker, render
from maestro.cli.models import EventView, RunView, StepView, TokenUsageView
from maestro.cli.terminal import ViewKind, choose_view, make_console, printable, use_color

T0 = datetime(2026, 11, 24, 18, 0, 0, tzinfo=UTC)


def _run() -> RunView:
    return RunView(
        name="runs/abc",
        workflow="sdlc-linear",
        state="PENDING",
        create_time=T0,
        steps=(
            StepView(step_id="requirements", persona="requirements_analyst", state="PENDING"),
            StepView(step_id="backend", persona="backend_developer", state="PENDING"),
            StepView(step_id="review", persona="code_reviewer", state="PENDING"),
        ),
    )


def _event(seq: int, kind: str, step: str = "", at: float = 0, message: str = "", **attrs: str):
    return EventView(
        run="runs/abc",
        sequence=seq,
        type=kind,
        step_id=step,
        time=T0 + timedelta(seconds=at),
        message=message,
        attributes=attrs,
    )


def _tracked() -> RunTracker:
    tracker = RunTracker(_run())
    for event in (
        _event(1, "RUN_STARTED", at=1),
        _event(2, "STEP_STARTED", "requirements", 1, attempt="1", persona="requirements_analyst"),
        _event(3, "STEP_PROGRESS", "requirements", 2, "calling claude-x", provider="anthropic"),
        _event(4, "ARTIFACT_RECORDED", "requirements", 5, "docs/requirements.md (10 bytes)"),
        _event(
            5,
            "STEP_SUCCEEDED",
            "requirements",
            6,
            "requirements succeeded: 1 file",
            attempt="1",
            provider="anthropic",
            model="claude-x",
            files="1",
            input_tokens="1000",
            output_tokens="200",
            cache_read_tokens="300",
            cache_write_tokens="0",
            cost_usd="0.012500",
        ),
        _event(6, "STEP_STARTED", "backend", 6, attempt="1", persona="backend_developer"),
        _event(
            7,
            "STEP_RETRY_SCHEDULED",
            "backend",
            8,
            attempt="1",
            reason="overloaded",
            retry_in_seconds="2.00",
        ),
        _event(8, "STEP_STARTED", "backend", 10, attempt="2", persona="backend_developer"),
        _event(9, "STEP_PROGRESS", "backend", 11, "calling claude-x (code mode)"),
    ):
        tracker.apply(event)
    return tracker


def test_events_give_each_step_its_state_attempt_times_and_spend():
    tracker = _tracked()
    first, backend, review = tracker.rows.values()
    assert (first.state, first.attempt, first.files) == ("SUCCEEDED", 1, 1)
    assert first.elapsed(T0 + timedelta(hours=1)) == timedelta(seconds=5)
    assert first.spent.total_tokens == 1500 and first.spent.cost_usd == 0.0125
    assert first.note == "1 file · claude-x"
    assert (backend.state, backend.attempt) == ("RUNNING", 2)
    assert backend.elapsed(T0 + timedelta(seconds=20)) == timedelta(seconds=14)  # since try 1
    assert (review.state, review.attempt, review.started) == ("PENDING", 0, None)
    assert tracker.state == "RUNNING" and tracker.provider == "anthropic"
    assert tracker.usage.total_tokens == 1500


def test_a_retry_says_which_attempt_failed_why_and_when_it_goes_again():
    tracker = RunTracker(_run())
    tracker.apply(_event(1, "STEP_STARTED", "backend", 0, attempt="1"))
    tracker.apply(
        _event(
            2,
            "STEP_RETRY_SCHEDULED",
            "backend",
            3,
            attempt="1",
            reason="overloaded",
            retry_in_seconds="20.00",
        )
    )
    row = tracker.rows["backend"]
    assert row.state == "RETRYING"
    assert row.note == "attempt 1 failed: overloaded (again in 20.0s)"


def test_a_polled_run_shows_tokens_spent_before_the_attempt_ends():
    tracker = _tracked()
    polled = _run().model_copy(
        update={
            "steps": (
                StepView(
                    step_id="backend",
                    persona="backend_developer",
                    state="RUNNING",
                    usage=TokenUsageView(input_tokens=4000, output_tokens=10, cost_usd=0.02),
                ),
            )
        }
    )
    tracker.refresh(polled)
    backend = tracker.rows["backend"]
    assert backend.spent.total_tokens == 4010
    assert tracker.usage.total_tokens == 1500 + 4010
    # What the events said still wins when it is more (the poll can lag behind).
    requirements = tracker.rows["requirements"]
    requirements.polled = TokenUsageView(input_tokens=1)
    assert requirements.spent.total_tokens == 1500


def test_a_quiet_model_is_named_with_how_long_it_has_said_nothing():
    tracker = _tracked()
    backend = tracker.rows["backend"]
    assert backend.quiet_for(T0 + timedelta(seconds=20)) is None  # 9 s: not worth saying
    quiet = backend.quiet_for(T0 + timedelta(seconds=11 + 130))
    assert quiet == timedelta(seconds=130)
    assert backend.quiet_notice(quiet) == "waiting for the model: no output for 2m10s"
    backend.note = "running the tests in the sandbox"
    assert backend.quiet_notice(quiet) == "no progress for 2m10s"
    assert tracker.rows["requirements"].quiet_for(T0 + timedelta(hours=1)) is None  # finished


def test_the_table_shows_every_step_with_its_symbol_state_and_latest_line():
    tracker = _tracked()
    console = make_console(io.StringIO(), color=False)
    console.width = 160
    with console.capture() as captured:
        console.print(render(tracker, T0 + timedelta(seconds=11 + 130)))
    lines = captured.get().splitlines()
    assert lines[0].startswith("▶ runs/abc  sdlc-linear  RUNNING  2m20s  1.5k tokens  $0.0125")
    assert lines[0].endswith("(anthropic)")
    assert lines[1].split() == [
        "STEP",
        "PERSONA",
        "STATE",
        "TRY",
        "ELAPSED",
        "TOKENS",
        "COST",
        "LATEST",
    ]
    assert lines[2].split()[:8] == [
        "✓",
        "requirements",
        "requirements_analyst",
        "SUCCEEDED",
        "1",
        "5.0s",
        "1.5k",
        "$0.0125",
    ]
    assert lines[3].split()[:6] == ["▶", "backend", "backend_developer", "RUNNING", "2", "2m15s"]
    assert lines[3].rstrip().endswith("waiting for the model: no output for 2m10s")
    assert lines[4].split() == ["·", "review", "code_reviewer", "PENDING", "-", "-", "-", "-"]


def test_the_end_of_the_run_is_taken_from_its_terminal_event():
    tracker = _tracked()
    tracker.apply(_event(10, "STEP_FAILED", "backend", 12, reason="model returned no files"))
    tracker.apply(_event(11, "STEP_BLOCKED", "review", 12, reason="backend failed"))
    tracker.apply(_event(12, "RUN_FAILED", at=12, error="step backend failed"))
    assert tracker.state == "FAILED" and tracker.error == "step backend failed"
    assert tracker.elapsed(T0 + timedelta(hours=1)) == timedelta(seconds=11)
    assert tracker.rows["backend"].note == "model returned no files"
    review = tracker.rows["review"]
    assert (review.state, review.ended) == ("BLOCKED", None)


def test_plain_lines_say_once_a_minute_that_a_step_is_quiet():
    tracker = _tracked()
    out = io.StringIO()
    view = PlainLines(tracker, make_console(out, color=False))
    start = T0 + timedelta(seconds=11 + 25)
    first = view.notices(start)
    assert len(first) == 1 and first[0].endswith("waiting for the model: no output for 25.0s")
    assert "backend" in first[0]
    assert view.notices(start + timedelta(seconds=30)) == []
    assert len(view.notices(start + timedelta(seconds=61))) == 1


def test_plain_lines_are_one_per_event_and_never_wrap():
    out = io.StringIO()
    view = PlainLines(RunTracker(_run()), make_console(out, color=False))
    view.event(_event(1, "STEP_PROGRESS", "backend", 0, "x" * 300 + "\nsecond line\x1b[2J"))
    text = out.getvalue()
    assert text.count("\n") == 1
    assert "\x1b" not in text and "x" * 300 in text


def test_views_and_colours_follow_the_terminal_the_flags_and_no_color():
    assert choose_view(as_json=True, plain=False, is_terminal=True, env={}) is ViewKind.JSON
    assert choose_view(as_json=False, plain=False, is_terminal=True, env={}) is ViewKind.LIVE
    assert choose_view(as_json=False, plain=True, is_terminal=True, env={}) is ViewKind.PLAIN
    assert choose_view(as_json=False, plain=False, is_terminal=False, env={}) is ViewKind.PLAIN
    dumb = {"TERM": "dumb"}
    assert choose_view(as_json=False, plain=False, is_terminal=True, env=dumb) is ViewKind.PLAIN
    assert use_color("auto", is_terminal=True, env={})
    assert not use_color("auto", is_terminal=True, env={"NO_COLOR": "1"})
    assert not use_color("auto", is_terminal=False, env={})
    assert use_color("always", is_terminal=False, env={"NO_COLOR": "1"})
    assert not use_color("never", is_terminal=True, env={})


def test_control_characters_never_reach_the_terminal():
    assert printable("a\x1b[2Jb\x07c\td") == "a\\x1b[2Jb\\x07c\td"
    assert printable("one\ntwo", one_line=True) == "one two"
    assert printable("one\ntwo") == "one\ntwo"


def test_a_step_waiting_for_a_decision_is_shown_with_the_commands_to_decide() -> None:
    tracker = RunTracker(_run())
    asked = _event(
        1, "APPROVAL_REQUESTED", "review", 3, "review waits for a decision", prompt="Ship it?"
    )
    tracker.apply(asked)
    assert tracker.waiting() == ["review"]
    console = make_console(io.StringIO(), color=False)
    console.width = 160
    with console.capture() as captured:
        console.print(render(tracker, T0 + timedelta(seconds=5)))
    lines = captured.get().splitlines()
    assert lines[-3].strip() == "? review waits for your decision: Ship it?"
    assert lines[-2].split() == ["approve:", "maestro", "runs", "approve", "abc", "review"] + [
        "[--comment",
        "TEXT]",
    ]
    assert lines[-1].split() == ["reject:", "maestro", "runs", "reject", "abc", "review"] + [
        "--comment",
        "TEXT",
    ]
    out = io.StringIO()
    PlainLines(RunTracker(_run()), make_console(out, color=False)).event(asked)
    assert "maestro runs approve abc review" in out.getvalue()

    tracker.apply(_event(2, "STEP_APPROVED", "review", 9, "review approved by ana", round="0"))
    assert tracker.waiting() == []

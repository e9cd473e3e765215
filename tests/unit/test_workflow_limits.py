"""Hostile workflow text: every failure is a WorkflowError with a field and a bounded reason."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from maestro.core.errors import ResourceExhausted
from maestro.workflow import (
    WorkflowError,
    offloop,
    parse_workflow_off_loop,
    parse_workflow_yaml,
)
from maestro.workflow.limits import (
    MAX_DEPENDENCIES,
    MAX_ECHO_CHARS,
    MAX_PROBLEMS_LISTED,
    MAX_STEPS,
    MAX_WORKFLOW_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
)

STEP = "steps:\n  - {id: a, persona: backend_developer}\n"


def rejected(text: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        parse_workflow_yaml(text, source="w.yaml")
    err = caught.value
    # Whatever the input, the message stays short and encodable.
    assert len(err.message) < 12_000
    err.message.encode("utf-8")
    return err


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        (
            "name: x\nretry: {max_attempts: " + "9" * 5001 + "}\n" + STEP,
            "retry.max_attempts",
            "int",
        ),
        ("name: 2024-13-45\n" + STEP, "name", "month must be in 1..12"),
        ("name: !!int abc\n" + STEP, "name", "cannot read 'abc' as 'int'"),
        ("name: !!float abc\n" + STEP, "name", "cannot read 'abc' as 'float'"),
        ("name: !!bool maybe\n" + STEP, "name", "cannot read 'maybe' as 'bool'"),
        ("name: !!timestamp abc\n" + STEP, "name", "as 'timestamp'"),
        ("name: !!map [1]\n" + STEP, "name", "cannot mark a list"),
        ("name: !!python/object:os.system [ls]\n" + STEP, "name", "cannot mark a list"),
        ("? [a, b]\n: 1\nname: x\n" + STEP, "workflow", "keys must be plain strings"),
        ("{a: 1}: 2\nname: x\n" + STEP, "workflow", "keys must be plain strings"),
        ("1: 1\nname: x\n" + STEP, "workflow", "keys must be plain strings"),
        ("name: x\nretry: {<<: 1}\n" + STEP, "retry", "merging"),
    ],
)
def test_values_yaml_cannot_construct_are_field_errors(text, field, fragment):
    err = rejected(text)
    assert err.field == field
    assert fragment in err.message


@pytest.mark.parametrize(
    "text",
    [
        'name: x\nsteps:\n  - {id: a, persona: qa_engineer, instructions: "\\udfff"}\n',
        'name: x\nsteps:\n  - {id: "\\ud800", persona: qa_engineer, depends_on: ["\\ud800"]}\n',
        "name: x\ninstructions: \udfff\n" + STEP,
    ],
)
def test_lone_surrogates_are_refused_with_an_encodable_message(text):
    err = rejected(text)
    assert "surrogate" in err.message or "invalid Unicode" in err.message


def test_a_lone_surrogate_from_the_pure_python_parser_is_refused_at_its_field(monkeypatch):
    # libyaml refuses "\udfff" escapes itself; PyYAML's own parser builds them.
    import yaml

    from maestro.workflow import loader

    class PureLoader(yaml.SafeLoader):
        pass

    monkeypatch.setattr(loader, "_Loader", PureLoader)
    err = rejected('name: x\nsteps:\n  - {id: a, persona: qa_engineer, instructions: "\\udfff"}\n')
    assert err.field == "steps[0].instructions"
    assert "lone surrogate" in err.reason


def test_timeouts_are_capped_at_a_day():
    err = rejected("name: x\ndefault_timeout: 99999999h\n" + STEP)
    assert err.field == "default_timeout"
    assert "the longest allowed is 1d" in err.message
    err = rejected("name: x\nsteps:\n  - {id: a, persona: qa_engineer, timeout: 25h}\n")
    assert err.field == "steps[a].timeout"
    assert parse_workflow_yaml(
        "name: x\ndefault_timeout: 24h\ndefault_deadline: 2d\n" + STEP
    ).default_timeout
    err = rejected("name: x\ndefault_deadline: 8d\n" + STEP)
    assert (err.field, "the longest allowed is 7d" in err.reason) == ("default_deadline", True)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: x\nsteps: [" + ",".join(["a"] * (MAX_YAML_NODES + 1)) + "]\n", "values"),
        ("name: x\nx: " + "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1) + "\n", "deep"),
        # Deep enough to crash libyaml's recursive composer, if it were reached.
        ("name: x\nx: " + "[" * 60_000 + "]" * 60_000 + "\n", "deep"),
        ("name: x\ndescription: " + "x" * MAX_WORKFLOW_BYTES + "\n" + STEP, "too large"),
    ],
)
def test_documents_past_the_limits_are_refused_before_being_built(text, fragment):
    started = time.perf_counter()
    err = rejected(text)
    assert err.field == "workflow"
    assert fragment in err.message
    assert time.perf_counter() - started < 5


def test_step_and_dependency_counts_are_capped():
    steps = "".join(f"  - {{id: s{i}, persona: qa_engineer}}\n" for i in range(MAX_STEPS + 1))
    err = rejected("name: x\nsteps:\n" + steps)
    assert (err.field, err.reason) == ("steps", f"has {MAX_STEPS + 1} steps; at most {MAX_STEPS}")
    deps = ", ".join(f"d{i}" for i in range(MAX_DEPENDENCIES + 1))
    err = rejected(f"name: x\nsteps:\n  - {{id: a, persona: qa_engineer, depends_on: [{deps}]}}\n")
    assert err.field == "steps[0].depends_on"


def test_messages_echo_at_most_a_little_of_the_input_and_list_few_problems():
    long_id = "z" * 1000
    deps = ", ".join(f"d{i}{long_id}" for i in range(MAX_DEPENDENCIES))
    steps = "".join(
        f"  - {{id: s{i}, persona: qa_engineer, depends_on: [{deps}]}}\n" for i in range(3)
    )
    err = rejected("name: x\nsteps:\n" + steps)
    assert len(err.problems) == MAX_PROBLEMS_LISTED
    assert err.more == 3 * MAX_DEPENDENCIES - MAX_PROBLEMS_LISTED
    assert err.message.endswith(f"and {err.more} more problems")
    for problem in err.problems:
        assert len(problem.reason) < 3 * MAX_ECHO_CHARS


def test_names_with_terminal_escapes_or_bidi_overrides_are_refused():
    for name in ('"\\e]0;owned\\a"', '"a\\u202eb"', '"x\\x9b2J"'):
        err = rejected(f"name: {name}\n" + STEP)
        assert err.field == "name"
        assert "control or formatting characters" in err.reason
        assert err.reason.isprintable()


def test_merge_keys_still_work_and_real_duplicates_are_still_refused():
    spec = parse_workflow_yaml(
        "name: x\n"
        "steps:\n  - &b {id: a, persona: qa_engineer, timeout: 5m}\n"
        "  - {<<: *b, id: c, timeout: 6m}\n  - {<<: [*b], id: d}\n"
    )
    assert [(s.id, s.persona, s.timeout) for s in spec.steps] == [
        ("a", "qa_engineer", timedelta(minutes=5)),
        ("c", "qa_engineer", timedelta(minutes=6)),
        ("d", "qa_engineer", timedelta(minutes=5)),
    ]
    err = rejected("name: x\nname: y\n" + STEP)
    assert "duplicate key 'name'" in err.message


# As many steps with MAX_DEPENDENCIES unknown dependencies as fit in MAX_WORKFLOW_BYTES.
FITTING_STEPS = 100


async def test_validation_runs_off_the_loop_and_the_loop_keeps_turning():
    deps = ", ".join(f"unknown{i}" for i in range(MAX_DEPENDENCIES))
    steps = "".join(
        f"  - {{id: s{i}, persona: qa_engineer, depends_on: [{deps}]}}\n"
        for i in range(FITTING_STEPS)
    )
    text = "name: x\nsteps:\n" + steps
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        with pytest.raises(WorkflowError):
            await parse_workflow_off_loop(text, source="workflow_yaml", time_limit=30)
    finally:
        task.cancel()
    assert ticks > 1


async def test_a_flood_of_validations_is_refused_not_queued_without_end(monkeypatch):
    monkeypatch.setattr(offloop, "MAX_VALIDATIONS_WAITING", 0)
    text = "name: x\n" + STEP
    results = await asyncio.gather(
        *(
            parse_workflow_off_loop(text, source="workflow_yaml", time_limit=30)
            for _ in range(offloop.VALIDATION_THREADS + 3)
        ),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, ResourceExhausted)]
    assert refused and all(r.retry_after for r in refused)
    assert len(results) - len(refused) >= offloop.VALIDATION_THREADS
    # Admissions are released again: a later validation is accepted.
    spec = await parse_workflow_off_loop(text, source="workflow_yaml", time_limit=30)
    assert spec.name == "x"


def test_budgets_and_model_names_are_bounded():
    err = rejected("name: x\nbudget: {tokens: " + "9" * 30 + "}\n" + STEP)
    assert err.field == "budget.tokens"
    err = rejected("name: x\nbudget: {usd: 1e300}\n" + STEP)
    assert err.field == "budget.usd"
    err = rejected("name: x\nmodel: " + "m" * 500 + "\n" + STEP)
    assert err.field == "model"
    assert len(err.message) < 1000

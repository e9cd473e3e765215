import textwrap
from datetime import timedelta

import pytest
from pydantic import ValidationError

from maestro.core.errors import Code, InvalidArgument, error_for_code
from maestro.personas import PERSONAS
from maestro.workflow import (
    RetryPolicy,
    StepKind,
    StepSpec,
    WorkflowError,
    WorkflowProblem,
    WorkflowSpec,
    builtin_workflow,
    builtin_workflow_names,
    builtin_workflow_yaml,
    load_workflow,
    parse_workflow_yaml,
)


def problems(text: str) -> list[tuple[str, str]]:
    """Parses a workflow that must be invalid; returns its (field, reason) pairs."""
    with pytest.raises(WorkflowError) as caught:
        parse_workflow_yaml(textwrap.dedent(text), source="test.yaml")
    return [(p.field, p.reason) for p in caught.value.problems]


def only_problem(text: str) -> tuple[str, str]:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def spec(**steps: list[str]) -> WorkflowSpec:
    """A workflow of qa_engineer steps: spec(b=["a"], a=[]) means b depends on a."""
    return WorkflowSpec(
        name="t",
        steps=[StepSpec(id=i, persona="qa_engineer", depends_on=deps) for i, deps in steps.items()],
    )


# Built-in workflows


def test_builtin_names():
    assert builtin_workflow_names() == ["sdlc-linear", "sdlc-parallel"]


def test_sdlc_linear_is_a_chain():
    wf = load_workflow("sdlc-linear")
    assert wf.name == "sdlc-linear"
    assert wf.description
    assert [(s.id, s.persona, s.depends_on) for s in wf.steps] == [
        ("requirements", "requirements_analyst", ()),
        ("architecture", "solution_architect", ("requirements",)),
        ("implementation", "backend_developer", ("architecture",)),
        ("testing", "qa_engineer", ("implementation",)),
        ("checks", "", ("testing",)),
        ("review", "code_reviewer", ("checks",)),
    ]
    assert all(s.instructions for s in wf.steps if s.kind is StepKind.PERSONA)
    assert [s.id for s in wf.steps if s.kind is StepKind.GATE] == ["checks"]
    gate = wf.step("checks")
    assert [c.value for c in gate.checks] == ["pytest", "ruff", "compile"]
    assert gate.on_fail is not None
    assert (gate.on_fail.rework, gate.on_fail.max_rounds) == (("implementation",), 2)


def test_sdlc_parallel_fans_out_after_architecture_and_joins_at_testing():
    wf = load_workflow("sdlc-parallel")
    assert [(s.id, s.persona, s.depends_on) for s in wf.steps] == [
        ("requirements", "requirements_analyst", ()),
        ("architecture", "solution_architect", ("requirements",)),
        ("backend", "backend_developer", ("architecture",)),
        ("frontend", "frontend_developer", ("architecture",)),
        ("testing", "qa_engineer", ("backend", "frontend")),
        ("packaging", "devops_engineer", ("testing",)),
        ("checks", "", ("packaging",)),
        ("review", "code_reviewer", ("checks",)),
        ("docs", "technical_writer", ("review",)),
    ]
    assert wf.default_timeout == timedelta(minutes=10)
    assert all(s.instructions for s in wf.steps if s.kind is StepKind.PERSONA)
    assert wf.ancestors("testing") == ["backend", "frontend", "architecture", "requirements"]
    assert wf.dependents("architecture") == [
        "backend",
        "frontend",
        "testing",
        "packaging",
        "checks",
        "review",
        "docs",
    ]
    policy = wf.step("checks").on_fail
    assert policy is not None
    assert policy.rework == ("backend", "frontend")


def test_builtin_yaml_and_builtin_workflow_agree():
    for name in builtin_workflow_names():
        assert parse_workflow_yaml(builtin_workflow_yaml(name)) == builtin_workflow(name)


def test_unknown_builtin_yaml_names_the_builtins():
    with pytest.raises(WorkflowError) as caught:
        builtin_workflow_yaml("sdlc-paralel")
    assert caught.value.field == "workflow"
    assert "unknown built-in workflow 'sdlc-paralel'" in caught.value.reason
    assert "did you mean 'sdlc-parallel'?" in caught.value.reason
    assert "sdlc-linear, sdlc-parallel" in caught.value.reason


def test_builtin_workflow_never_reads_files(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(builtin_workflow_yaml("sdlc-linear"))
    with pytest.raises(WorkflowError, match="unknown built-in workflow"):
        builtin_workflow(str(path))


# Loading files


def test_load_workflow_from_a_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nsteps:\n  - id: only\n    persona: technical_writer\n    timeout: 90s\n"
    )
    wf = load_workflow(str(path))
    assert wf.name == "mine"
    assert wf.step("only").persona == "technical_writer"
    assert wf.timeout_for("only") == timedelta(seconds=90)


def test_missing_file_or_unknown_name_lists_the_builtins(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(WorkflowError) as caught:
        load_workflow(missing)
    err = caught.value
    assert isinstance(err, InvalidArgument)
    assert err.code is Code.INVALID_ARGUMENT
    assert err.field == "workflow"
    assert f"no built-in workflow or file named {missing!r}" in err.reason
    assert "(built-in workflows: sdlc-linear, sdlc-parallel)" in err.reason

    with pytest.raises(WorkflowError, match="no built-in workflow or file named 'sdlc'"):
        load_workflow("sdlc")


def test_directory_is_not_a_workflow(tmp_path):
    with pytest.raises(WorkflowError, match="is a directory, not a workflow file"):
        load_workflow(str(tmp_path))


def test_invalid_file_reports_its_problems(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nsteps:\n  - id: a\n    persona: wizard\n")
    with pytest.raises(WorkflowError) as caught:
        load_workflow(str(path))
    assert caught.value.field == "steps[a].persona"


# Round trip and graph queries


def test_round_trips_through_json():
    for name in builtin_workflow_names():
        wf = load_workflow(name)
        assert WorkflowSpec.model_validate_json(wf.model_dump_json()) == wf
    # The longest values allowed (24 h timeouts, 1 h backoffs), off by a microsecond.
    odd = WorkflowSpec(
        name="odd",
        default_timeout=timedelta(hours=23, minutes=59, seconds=59, microseconds=3),
        retry=RetryPolicy(max_attempts=5, initial_backoff="250ms", max_backoff="59m59.5s"),
        steps=[StepSpec(id="a", persona="qa_engineer", timeout=timedelta(microseconds=1))],
    )
    restored = WorkflowSpec.model_validate_json(odd.model_dump_json())
    assert restored == odd
    assert restored.ancestors("a") == []


def test_ancestors_are_nearest_first_without_duplicates():
    wf = spec(a=[], b=["a"], c=["a"], d=["c", "b"], e=["d", "a"])
    assert wf.ancestors("e") == ["d", "a", "c", "b"]
    assert wf.ancestors("d") == ["c", "b", "a"]
    assert wf.ancestors("a") == []


def test_ancestors_with_a_limit_are_the_nearest_of_the_full_walk():
    wf = spec(a=[], b=["a"], c=["a"], d=["c", "b"], e=["d", "a"])
    full = wf.ancestors("e")
    for limit in range(1, len(full) + 2):
        assert wf.ancestors("e", limit) == full[:limit]
    chain = spec(**{f"s{i}": [f"s{i - 1}"] if i else [] for i in range(200)})
    assert chain.ancestors("s199", 3) == ["s198", "s197", "s196"]


def test_dependents_are_nearest_first_in_declaration_order():
    wf = spec(a=[], b=["a"], c=["a"], d=["c", "b"], e=["d", "a"])
    assert wf.dependents("a") == ["b", "c", "e", "d"]
    assert wf.dependents("b") == ["d", "e"]
    assert wf.dependents("e") == []


def test_unknown_step_is_a_key_error():
    wf = spec(a=[])
    for query in (wf.step, wf.ancestors, wf.dependents, wf.timeout_for, wf.retry_for):
        with pytest.raises(KeyError, match="has no step 'zz'"):
            query("zz")


def test_timeout_and_retry_fall_back_to_the_workflow_defaults():
    wf = parse_workflow_yaml(
        textwrap.dedent(
            """
            name: t
            steps:
              - {id: a, persona: qa_engineer}
              - {id: b, persona: qa_engineer, timeout: 1h30m, retry: {max_attempts: 4}}
            """
        )
    )
    assert wf.default_timeout == timedelta(minutes=10)
    assert wf.timeout_for("a") == timedelta(minutes=10)
    assert wf.timeout_for("b") == timedelta(hours=1, minutes=30)
    assert wf.retry_for("a") == RetryPolicy()
    assert wf.retry_for("a") == RetryPolicy(
        max_attempts=2, initial_backoff=timedelta(seconds=1), max_backoff=timedelta(seconds=30)
    )
    assert wf.retry_for("b").max_attempts == 4
    assert wf.retry_for("b").initial_backoff == timedelta(seconds=1)


def test_workflow_level_defaults_apply_to_steps():
    wf = parse_workflow_yaml(
        "name: t\ndefault_timeout: 2m\nretry: {max_attempts: 1}\n"
        "steps:\n  - {id: a, persona: qa_engineer}\n"
    )
    assert wf.timeout_for("a") == timedelta(minutes=2)
    assert wf.retry_for("a").max_attempts == 1


# Validation: each problem, with the field it names and the reason


def test_empty_workflow():
    assert only_problem("name: t\nsteps: []\n") == ("steps", "workflow has no steps")


def test_missing_required_fields():
    assert problems("description: nothing\n") == [
        ("name", "missing required field 'name'"),
        ("steps", "missing required field 'steps'"),
    ]
    field, reason = only_problem("name: t\nsteps:\n  - id: a\n")
    assert (field, reason) == ("steps[a].persona", "missing required field 'persona'")


def test_duplicate_step_id_names_both_steps():
    field, reason = only_problem(
        """
        name: t
        steps:
          - {id: a, persona: qa_engineer}
          - {id: b, persona: qa_engineer}
          - {id: a, persona: code_reviewer}
        """
    )
    assert field == "steps[2].id"
    assert reason == "duplicate step id 'a' (also used by steps[0])"


@pytest.mark.parametrize("bad_id", ["Backend", "1st", "has space", "x" * 64, "_a", ""])
def test_bad_step_id_format(bad_id):
    field, reason = only_problem(f"name: t\nsteps:\n  - {{id: '{bad_id}', persona: qa_engineer}}\n")
    assert field == "steps[0].id"
    assert reason.startswith(f"{bad_id!r} is not a valid step id")
    assert "lowercase letters, digits, '_' or '-', starting with a letter" in reason


def test_unknown_persona_is_named_with_the_known_ones():
    field, reason = only_problem("name: t\nsteps:\n  - {id: backend, persona: backend_dev}\n")
    assert field == "steps[backend].persona"
    assert reason.startswith("unknown persona 'backend_dev' (did you mean 'backend_developer'?)")
    assert f"(known personas: {', '.join(sorted(PERSONAS))})" in reason


def test_unknown_dependency_names_the_step_and_the_missing_id():
    field, reason = only_problem(
        """
        name: t
        steps:
          - {id: backend, persona: backend_developer}
          - {id: testing, persona: qa_engineer, depends_on: [backned]}
        """
    )
    assert field == "steps[testing].depends_on"
    assert reason == "step 'testing' depends on unknown step 'backned' (did you mean 'backend'?)"


def test_self_dependency():
    assert only_problem(
        "name: t\nsteps:\n  - {id: a, persona: qa_engineer, depends_on: [a]}\n"
    ) == (
        "steps[a].depends_on",
        "step 'a' depends on itself",
    )


def test_repeated_dependency():
    field, reason = only_problem(
        "name: t\nsteps:\n  - {id: a, persona: qa_engineer}\n"
        "  - {id: b, persona: qa_engineer, depends_on: [a, a]}\n"
    )
    assert (field, reason) == ("steps[b].depends_on", "step 'b' lists 'a' more than once")


def test_cycle_names_its_steps_in_order():
    field, reason = only_problem(
        """
        name: t
        steps:
          - {id: start, persona: qa_engineer}
          - {id: a, persona: qa_engineer, depends_on: [start, c]}
          - {id: b, persona: qa_engineer, depends_on: [a]}
          - {id: c, persona: qa_engineer, depends_on: [b]}
          - {id: after, persona: qa_engineer, depends_on: [c]}
        """
    )
    assert field == "steps"
    assert reason.startswith("cycle: a -> b -> c -> a")


def test_two_separate_cycles_are_both_reported():
    found = problems(
        """
        name: t
        steps:
          - {id: a, persona: qa_engineer, depends_on: [b]}
          - {id: b, persona: qa_engineer, depends_on: [a]}
          - {id: c, persona: qa_engineer, depends_on: [d]}
          - {id: d, persona: qa_engineer, depends_on: [c]}
        """
    )
    assert [reason.split(" (")[0] for _, reason in found] == [
        "cycle: a -> b -> a",
        "cycle: c -> d -> c",
    ]


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ("timeout: 5 minutes", "steps[a].timeout", "'5 minutes' is not a duration; use e.g. 30s"),
        ("timeout: 0s", "steps[a].timeout", "'0s' is zero; a duration must be positive"),
        ("timeout: -5", "steps[a].timeout", "-5 is negative; a duration must be positive"),
        ("timeout: yes", "steps[a].timeout", "True is not a duration"),
        (
            "retry: {initial_backoff: soon}",
            "steps[a].retry.initial_backoff",
            "'soon' is not a duration",
        ),
    ],
)
def test_bad_step_duration(line, field, reason):
    found_field, found_reason = only_problem(
        f"name: t\nsteps:\n  - id: a\n    persona: qa_engineer\n    {line}\n"
    )
    assert found_field == field
    assert reason in found_reason


def test_bad_default_timeout():
    field, reason = only_problem(
        "name: t\ndefault_timeout: 10 min\nsteps:\n  - {id: a, persona: qa_engineer}\n"
    )
    assert (field, reason) == (
        "default_timeout",
        "'10 min' is not a duration; use e.g. 30s, 5m, 1h30m",
    )


def test_backoff_must_not_exceed_its_maximum():
    field, reason = only_problem(
        "name: t\nretry: {initial_backoff: 1m, max_backoff: 5s}\n"
        "steps:\n  - {id: a, persona: qa_engineer}\n"
    )
    assert (field, reason) == ("retry", "initial_backoff (1m) is longer than max_backoff (5s)")


def test_approval_steps_need_no_persona():
    wf = parse_workflow_yaml(
        "name: t\nsteps:\n  - {id: a, persona: qa_engineer}\n"
        "  - {id: ok, kind: approval, depends_on: [a], timeout: 24h, prompt: Check it.,"
        " on_timeout: approve, on_reject: {rework: [a]}}\n"
    )
    step = wf.step("ok")
    assert (step.kind, step.persona, step.on_timeout) == (StepKind.APPROVAL, "", "approve")
    assert step.timeout == timedelta(hours=24)  # longer than the default deadline: a wait


def test_unknown_step_kind():
    assert only_problem("name: t\nsteps:\n  - {id: a, persona: qa_engineer, kind: robot}\n") == (
        "steps[a].kind",
        "unknown step kind 'robot' (known kinds: persona, gate, approval)",
    )


def test_unknown_fields_suggest_the_right_one():
    found = problems(
        """
        name: t
        timout: 5m
        steps:
          - {id: a, persona: qa_engineer, depend_on: [b], colour: red}
          - {id: b, persona: qa_engineer, retry: {attempts: 3}}
        """
    )
    assert found == [
        ("steps[a].depend_on", "unknown field 'depend_on' (did you mean 'depends_on'?)"),
        (
            "steps[a].colour",
            "unknown field 'colour' "
            "(allowed: id, persona, kind, depends_on, timeout, deadline, retry, instructions, "
            "model, effort, budget, fallback, checks, thresholds, coverage, on_fail, prompt, "
            "on_timeout, on_reject)",
        ),
        (
            "steps[b].retry.attempts",
            "unknown field 'attempts' (did you mean 'max_attempts'?)",
        ),
        (
            "timout",
            "unknown field 'timout' (allowed: name, description, default_timeout, "
            "default_deadline, retry, model, effort, budget, shared_paths, fallback, steps)",
        ),
    ]


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            "name: [x]\nsteps: [{id: a, persona: qa_engineer}]",
            "name",
            "expected a string, got a list",
        ),
        (
            "name: 2024-01-01\nsteps: [{id: a, persona: qa_engineer}]",
            "name",
            "expected a string, got a date",
        ),
        ("name: ''\nsteps: [{id: a, persona: qa_engineer}]", "name", "must not be empty"),
        ("name: t\nsteps: {a: 1}", "steps", "expected a list of steps, got a mapping"),
        ("name: t\nsteps:\n  - just text", "steps[0]", "expected a mapping, got a string"),
        (
            "name: t\nsteps:\n  - {id: a, persona: qa_engineer, depends_on: x}",
            "steps[a].depends_on",
            "expected a list of step ids, e.g. [architecture], got a string",
        ),
        (
            "name: t\nsteps:\n  - {id: no, persona: qa_engineer}",
            "steps[0].id",
            "expected a string, got a boolean",  # YAML 1.1 reads `no` as false
        ),
        (
            "name: t\nsteps:\n  - {id: a, persona: 7}",
            "steps[a].persona",
            "expected a string, got an integer",
        ),
        (
            "name: t\nsteps:\n  - {id: a, persona: qa_engineer, retry: {max_attempts: '3'}}",
            "steps[a].retry.max_attempts",
            "expected an integer, got a string",
        ),
    ],
)
def test_wrong_types(text, field, reason):
    assert only_problem(text + "\n") == (field, reason)


@pytest.mark.parametrize(
    ("attempts", "reason"),
    [(0, "must be at least 1, got 0"), (11, "must be at most 10, got 11")],
)
def test_max_attempts_out_of_range(attempts, reason):
    assert only_problem(
        f"name: t\nretry: {{max_attempts: {attempts}}}\n"
        "steps:\n  - {id: a, persona: qa_engineer}\n"
    ) == ("retry.max_attempts", reason)


def test_yaml_syntax_error_has_line_and_column():
    field, reason = only_problem("name: t\nsteps:\n  - id: a\n   persona: qa_engineer\n")
    assert field == "workflow"
    assert reason.startswith("invalid YAML in test.yaml at line 4, column 4: ")


def test_duplicate_yaml_key_is_an_error_not_silently_the_last_one():
    field, reason = only_problem(
        "name: t\nsteps:\n  - id: a\n    persona: qa_engineer\n    persona: code_reviewer\n"
    )
    assert field == "workflow"
    assert reason == "invalid YAML in test.yaml at line 5, column 5: found duplicate key 'persona'"


def test_yaml_merge_keys_may_be_overridden():
    wf = parse_workflow_yaml(
        "retry: &r {max_attempts: 3, max_backoff: 1m}\nname: t\n"
        "steps:\n  - {id: a, persona: qa_engineer, retry: {<<: *r, max_attempts: 4}}\n"
    )
    assert wf.retry_for("a") == RetryPolicy(max_attempts=4, max_backoff=timedelta(minutes=1))


@pytest.mark.parametrize(
    ("text", "got"), [("- a\n- b\n", "a list"), ("", "null"), ("just words", "a string")]
)
def test_top_level_must_be_a_mapping(text, got):
    assert only_problem(text) == (
        "workflow",
        f"test.yaml must be a mapping with 'name' and 'steps' at the top level, got {got}",
    )


def test_alias_bombs_are_refused():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    field, reason = only_problem("\n".join(lines) + "\n")
    assert field == "workflow"
    assert reason.startswith("test.yaml is too large: with aliases expanded")


def test_every_problem_is_reported_at_once():
    found = problems(
        """
        name: t
        steps:
          - {id: a, persona: wizard, timeout: forever}
          - {id: b, persona: qa_engineer, depends_on: [a, ghost]}
          - {id: c, persona: qa_engineer, depends_on: [d], kind: gate}
          - {id: d, persona: qa_engineer, depends_on: [c]}
        """
    )
    fields = [field for field, _ in found]
    assert fields == [
        "steps[a].persona",
        "steps[a].timeout",
        "steps[c]",
        "steps[b].depends_on",
        "steps",
    ]
    assert "unknown step 'ghost'" in found[3][1]
    assert found[4][1].startswith("cycle: c -> d -> c")


def test_error_message_lists_every_problem_and_survives_the_wire():
    with pytest.raises(WorkflowError) as caught:
        parse_workflow_yaml(
            "name: t\nsteps:\n  - {id: a, persona: wizard}\n"
            "  - {id: b, persona: qa_engineer, depends_on: [z]}\n"
        )
    err = caught.value
    assert err.field == "steps[a].persona"
    assert err.problems[1] == WorkflowProblem(
        field="steps[b].depends_on", reason="step 'b' depends on unknown step 'z'"
    )
    assert str(err) == err.message
    assert err.message.startswith("steps[a].persona: unknown persona 'wizard'")
    assert err.message.endswith("; steps[b].depends_on: step 'b' depends on unknown step 'z'")
    # What a client rebuilds from the INVALID_ARGUMENT status keeps the first field.
    rebuilt = error_for_code(err.code, err.message)
    assert isinstance(rebuilt, InvalidArgument)
    assert rebuilt.field == "steps[a].persona"


def test_models_enforce_the_same_rules_when_built_directly():
    with pytest.raises(ValidationError, match="cycle: a -> b -> a"):
        spec(a=["b"], b=["a"])
    with pytest.raises(ValidationError, match="unknown persona 'wizard'"):
        StepSpec(id="a", persona="wizard")
    with pytest.raises(ValidationError, match="extra"):
        WorkflowSpec.model_validate_json('{"name": "t", "steps": [], "x": 1}')


def test_specs_are_frozen():
    wf = spec(a=[])
    with pytest.raises(ValidationError, match="frozen"):
        wf.name = "other"  # type: ignore[misc]


def test_shared_paths_are_artifact_paths_or_directories() -> None:
    spec = parse_workflow_yaml(
        "name: x\nshared_paths: [docs//decisions.md, notes/]\n"
        "steps:\n  - {id: a, persona: qa_engineer}\n"
    )
    assert spec.shared_paths == ("docs/decisions.md", "notes/")
    for bad, reason in (("../x", "contains '..'"), (".git/config", ".git"), ("/etc/", "absolute")):
        with pytest.raises(WorkflowError) as err:
            parse_workflow_yaml(
                f"name: x\nshared_paths: ['{bad}']\nsteps:\n  - {{id: a, persona: qa_engineer}}\n"
            )
        (problem,) = err.value.problems
        assert problem.field == "shared_paths[0]" and reason in problem.reason

"""Argument parsing, workflow resolution and provider choice of the `maestro` command.

Every case here stops before any service is contacted (bad input exits 2 first).
"""

import json
import textwrap

import pytest

from maestro.cli.main import build_parser, main
from maestro.cli.options import (
    OFFLINE_NOTICE,
    choose_provider,
    gateway_address,
    resolve_workflow,
)
from maestro.personas import PERSONAS
from maestro.workflow import WorkflowError, builtin_workflow_yaml

GOOD_YAML = textwrap.dedent(
    """\
    name: tiny
    steps:
      - id: reqs
        persona: requirements_analyst
      - id: build
        persona: backend_developer
        depends_on: [reqs]
    """
)

BAD_YAML = textwrap.dedent(
    """\
    name: broken
    steps:
      - id: a
        persona: wizard
      - id: b
        persona: backend_developer
        depends_on: [nowhere]
    """
)


@pytest.fixture(autouse=True)
def _no_gateway_or_key(monkeypatch):
    # The developer's own shell must not change what these tests see.
    monkeypatch.delenv("MAESTRO_GATEWAY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


def test_run_defaults_to_sdlc_parallel_and_reads_every_option():
    args = build_parser().parse_args(["run", "-r", "a todo app"])
    assert (args.workflow, args.requirement, args.provider, args.gateway, args.json) == (
        "sdlc-parallel",
        "a todo app",
        None,
        None,
        False,
    )
    args = build_parser().parse_args(
        [
            "run",
            "flow.yaml",
            "--requirement",
            "x",
            "--out",
            "dist",
            "--provider",
            "offline",
            "--gateway",
            "h:1",
            "--json",
        ]
    )
    assert (args.workflow, str(args.out), args.provider, args.gateway, args.json) == (
        "flow.yaml",
        "dist",
        "offline",
        "h:1",
        True,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],  # --requirement is required
        ["run", "-r", "x", "--provider", "openai"],
        ["runs", "events", "r1", "--after", "-1"],
        ["up", "--port", "70000"],
        ["no-such-command"],
    ],
)
def test_bad_usage_exits_2(argv, capsys):
    assert main(argv) == 2
    assert "usage: maestro" in capsys.readouterr().err


def test_help_exits_0_and_no_command_prints_usage(capsys):
    assert main(["--help"]) == 0
    assert "personas" in capsys.readouterr().out
    assert main([]) == 2
    assert "usage: maestro" in capsys.readouterr().err
    assert main(["runs"]) == 2
    assert "events" in capsys.readouterr().err


def test_empty_requirement_exits_2(capsys):
    assert main(["run", "sdlc-linear", "-r", "   "]) == 2
    assert "--requirement must not be empty" in capsys.readouterr().err


def test_builtin_workflow_is_sent_by_name():
    choice = resolve_workflow("sdlc-linear")
    assert choice.workflow_name == "sdlc-linear"
    assert choice.workflow_yaml is None
    assert choice.spec.name == "sdlc-linear"


def test_workflow_file_is_sent_as_the_validated_text(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text(GOOD_YAML, encoding="utf-8")
    choice = resolve_workflow(str(path))
    assert choice.workflow_name is None
    assert choice.workflow_yaml == GOOD_YAML
    assert [s.id for s in choice.spec.steps] == ["reqs", "build"]


def test_builtin_name_wins_over_a_file_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sdlc-linear").write_text(GOOD_YAML, encoding="utf-8")
    choice = resolve_workflow("sdlc-linear")
    assert choice.workflow_name == "sdlc-linear"
    assert choice.spec.name == "sdlc-linear"


def test_invalid_workflow_file_lists_every_problem(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BAD_YAML, encoding="utf-8")
    with pytest.raises(WorkflowError) as caught:
        resolve_workflow(str(path))
    text = caught.value.message
    assert "wizard" in text
    assert "nowhere" in text


def test_run_with_an_invalid_workflow_exits_2_before_contacting_anything(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text(BAD_YAML, encoding="utf-8")
    # An unroutable gateway: reaching it would fail with exit 3, not 2.
    assert main(["run", str(path), "-r", "x", "--gateway", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "error: cannot start the run: 2 problems:" in err
    assert f"  workflow {str(path)!r}: " in err
    assert "wizard" in err
    assert "nowhere" in err


def test_run_with_a_missing_workflow_names_the_builtins(capsys):
    assert main(["run", "no-such-flow.yaml", "-r", "x", "--gateway", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "no-such-flow.yaml" in err
    assert "sdlc-linear" in err
    assert "sdlc-parallel" in err


def test_provider_flag_wins_over_the_environment():
    assert choose_provider("offline", {"ANTHROPIC_API_KEY": "sk-x"}).provider == "offline"
    picked = choose_provider("anthropic", {})
    assert (picked.provider, picked.notice) == ("anthropic", None)


def test_api_key_selects_anthropic_silently():
    picked = choose_provider(None, {"ANTHROPIC_API_KEY": "sk-x"})
    assert (picked.provider, picked.notice) == ("anthropic", None)


@pytest.mark.parametrize("env", [{}, {"ANTHROPIC_API_KEY": ""}, {"ANTHROPIC_API_KEY": "  "}])
def test_without_a_key_the_offline_provider_is_announced(env):
    picked = choose_provider(None, env)
    assert picked.provider == "offline"
    assert picked.notice == OFFLINE_NOTICE
    assert OFFLINE_NOTICE == (
        "ANTHROPIC_API_KEY is not set: using the offline provider (deterministic, no network)"
    )


def test_gateway_flag_wins_over_the_environment():
    env = {"MAESTRO_GATEWAY": "10.0.0.1:443"}
    assert gateway_address("127.0.0.1:9", env) == "127.0.0.1:9"
    assert gateway_address(None, env) == "10.0.0.1:443"
    assert gateway_address(None, {"MAESTRO_GATEWAY": " "}) is None
    assert gateway_address(None, {}) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "get", "r1"],
        ["runs", "events", "r1"],
        ["artifacts", "r1", "--out", "x"],
    ],
)
def test_reads_without_a_gateway_use_the_local_directory_and_say_when_it_is_empty(
    argv, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "no local runs" in err
    assert "--gateway" in err
    assert not (tmp_path / ".maestro").exists()  # a read creates nothing


def test_runs_list_without_a_gateway_or_local_runs_lists_none(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["runs", "list"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "no runs"
    assert "no local runs" in captured.err
    assert main(["runs", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"runs": [], "next_page_token": ""}


def test_a_malformed_run_id_exits_2(capsys):
    assert main(["runs", "get", "a/b", "--gateway", "127.0.0.1:1"]) == 2
    assert "not a run id" in capsys.readouterr().err


def test_validate_prints_the_step_graph(capsys):
    assert main(["validate", "sdlc-linear"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ok: sdlc-linear: 6 steps"
    assert lines[1].split() == ["requirements", "(requirements_analyst)"]
    assert lines[2].split() == ["architecture", "(solution_architect)", "<-", "requirements"]


def test_validate_a_file(tmp_path, capsys):
    path = tmp_path / "flow.yaml"
    path.write_text(GOOD_YAML, encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ok: tiny: 2 steps",
        "  reqs   (requirements_analyst)",
        "  build  (backend_developer)  <- reqs",
    ]


def test_validate_a_bad_file_lists_problems_and_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text(BAD_YAML, encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    problem_lines = captured.err.splitlines()[1:]
    assert len(problem_lines) >= 2
    assert all(line.startswith("  steps") for line in problem_lines)


def test_validate_the_default_workflow_matches_its_builtin_yaml(capsys):
    assert main(["validate", "sdlc-parallel"]) == 0
    out = capsys.readouterr().out
    for step_id in ("requirements", "architecture"):
        assert step_id in out
        assert step_id in builtin_workflow_yaml("sdlc-parallel")


def test_personas_lists_every_persona_with_role_and_deliverables(capsys):
    assert main(["personas"]) == 0
    out = capsys.readouterr().out
    for persona in PERSONAS.values():
        assert f"{persona.name}: {persona.role}" in out
        for deliverable in persona.deliverables:
            assert deliverable.path in out


def test_interactive_needs_a_terminal(capsys):
    # pytest's stdin is not a terminal: there is nobody to ask.
    assert main(["run", "-r", "x", "--interactive", "--provider", "offline"]) == 2
    assert "--interactive asks on a terminal" in capsys.readouterr().err


def test_reject_needs_a_comment(capsys):
    assert main(["runs", "reject", "r1", "sign-off"]) == 2
    assert "--comment" in capsys.readouterr().err

"""The conventions users of gh and kubectl expect: --version, --help for every command,
a subcommand's own usage on errors, one error prefix, --json on every command that
prints data, input checks with every problem listed, and completion scripts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from maestro.cli.checks import gateway_problem, out_problem, provider_problem
from maestro.cli.completion import command_tree, completion_script
from maestro.cli.main import build_parser, main
from maestro.cli.options import DEFAULT_ANTHROPIC_MODEL
from maestro.cli.render import plural
from maestro.personas import PERSONAS
from persona_service.settings import WorkerSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MAESTRO_GATEWAY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_version_prints_the_installed_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "maestro 0.1.0"


def test_every_command_has_a_summary_and_a_description():
    parser = build_parser()
    for path, command in _commands(parser):
        assert command.description, f"maestro {' '.join(path)} has no description"
    tree = command_tree(parser)
    stack = [tree]
    while stack:
        node = stack.pop()
        for name, child in node.subcommands.items():
            assert child.help, f"{name} has no summary in its parent's --help"
            stack.append(child)


def test_every_command_that_prints_data_takes_json():
    parser = build_parser()
    commands = {" ".join(path): command for path, command in _commands(parser) if path}
    for name in (
        "run",
        "runs list",
        "runs get",
        "runs cancel",
        "runs events",
        "artifacts",
        "validate",
        "personas",
    ):
        flags = {flag for action in commands[name]._actions for flag in action.option_strings}
        assert "--json" in flags, name


def test_a_subcommand_error_shows_that_subcommands_usage_with_one_prefix(capsys):
    assert main(["runs", "get"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: maestro runs get ")
    assert "error: the following arguments are required: RUN" in err
    assert "maestro: error" not in err and "Error:" not in err
    assert main(["runs", "get", "r1", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: maestro runs get ")
    assert "error: unrecognized arguments: --bogus" in err


def test_personas_and_validate_print_json(capsys):
    assert main(["personas", "--json"]) == 0
    personas = json.loads(capsys.readouterr().out)["personas"]
    assert [p["name"] for p in personas] == list(PERSONAS)
    assert all(p["role"] and p["deliverables"] for p in personas)
    assert main(["validate", "sdlc-linear", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True
    assert [s["id"] for s in out["workflow"]["steps"]][0] == "requirements"
    assert main(["validate", "sdlc-linear"]) == 0
    assert capsys.readouterr().out.startswith("ok: sdlc-linear: 6 steps\n")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("127.0.0.1:50051", None),
        ("localhost:1", None),
        ("[::1]:443", None),
        ("gateway.example:65535", None),
        ("http://127.0.0.1:8080", "give HOST:PORT without a scheme (such as '127.0.0.1:8080')"),
        ("dns:///gw:1", "without a scheme"),
        ("127.0.0.1:99999", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:http", "the port must be a number"),
        ("127.0.0.1", "give HOST:PORT"),
        (":50051", "give HOST:PORT"),
        ("a b:1", "is not a host name or address"),
    ],
)
def test_gateway_addresses_are_host_and_port_only(value, problem):
    found = gateway_problem(value, "--gateway")
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and found.startswith(f"--gateway {value!r}")


def test_out_and_provider_problems(tmp_path):
    (tmp_path / "file").write_text("x")
    assert out_problem(tmp_path / "new" / "dir") is None
    assert out_problem(tmp_path) is None
    assert "is a file" in (out_problem(tmp_path / "file") or "")
    assert "is a file, not a directory" in (out_problem(tmp_path / "file" / "sub") or "")
    assert provider_problem("anthropic", {}, local=True) is not None
    assert provider_problem("anthropic", {"ANTHROPIC_API_KEY": "k"}, local=True) is None
    # A remote gateway's workers have their own key.
    assert provider_problem("anthropic", {}, local=False) is None
    assert provider_problem("offline", {}, local=True) is None


def test_maestro_gateway_from_the_environment_is_checked_and_named(capsys, monkeypatch):
    monkeypatch.setenv("MAESTRO_GATEWAY", "https://gw.example:443")
    assert main(["runs", "list"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: MAESTRO_GATEWAY 'https://gw.example:443': give HOST:PORT without a scheme "
        "(such as 'gw.example:443')\n"
    )
    assert not Path(".maestro").exists()


def test_plurals_read_naturally():
    assert plural(1, "file") == "1 file"
    assert plural(0, "file") == "0 files"
    assert plural(2, "step") == "2 steps"
    assert plural(1200, "run") == "1,200 runs"


def test_the_model_named_up_front_is_the_workers_default():
    assert WorkerSettings.model_fields["anthropic_model"].default == DEFAULT_ANTHROPIC_MODEL


def test_completion_scripts_name_every_command_and_flag():
    parser = build_parser()
    bash = completion_script(parser, "bash")
    for word in ("run", "runs", "artifacts", "completion", "--requirement", "--after", "--color"):
        assert word in bash
    fish = completion_script(parser, "fish")
    assert "-a completion -d 'print a shell completion script'" in fish
    assert "__fish_seen_subcommand_from runs; and not __fish_seen_subcommand_from" in fish

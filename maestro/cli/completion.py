"""`maestro completion bash|zsh|fish`: shell completion scripts made from the parser.

The scripts are generated from the same argparse tree that parses the command line,
so they never list a command or flag that does not exist. Load one with
`source <(maestro completion bash)` (bash, and zsh through bashcompinit), or
`maestro completion fish | source`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")


@dataclass
class Command:
    """One command of the tree: its words, subcommands, flags and what values they take."""

    path: tuple[str, ...]
    help: str = ""
    subcommands: dict[str, Command] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    """Flag -> its help."""
    takes_value: set[str] = field(default_factory=set)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    paths: set[str] = field(default_factory=set)
    """Flags whose value is a file or directory."""
    positional_choices: tuple[str, ...] = ()


def command_tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Command:
    """The commands and flags of `parser`, recursively."""
    command = Command(path=path, help=parser.description or "")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                child = command_tree(sub, (*path, name))
                child.help = helps.get(name, "") or child.help
                command.subcommands[name] = child
            continue
        if not action.option_strings:
            if action.choices:
                command.positional_choices = tuple(str(c) for c in action.choices)
            continue
        for flag in action.option_strings:
            if not flag.startswith("--"):
                continue
            command.flags[flag] = (action.help or "").replace("%%", "%")
            if action.nargs != 0:
                command.takes_value.add(flag)
            if action.choices:
                command.choices[flag] = tuple(str(c) for c in action.choices)
            if action.type is not None and getattr(action.type, "__name__", "") == "Path":
                command.paths.add(flag)
    return command


def _walk(command: Command) -> list[Command]:
    found = [command]
    for child in command.subcommands.values():
        found += _walk(child)
    return found


def _bash(root: Command) -> str:
    commands = _walk(root)
    value_flags = sorted({f for c in commands for f in c.takes_value})
    known = " ".join(f'"{" ".join(c.path)}"' for c in commands if c.path)
    cases = []
    for c in commands:
        words = sorted(c.subcommands) + sorted(c.flags) + list(c.positional_choices)
        cases.append(f'        "{" ".join(c.path)}") words="{" ".join(words)}" ;;')
    value_cases = []
    for c in commands:
        for flag, options in sorted(c.choices.items()):
            value_cases.append(
                f'        "{" ".join(c.path)}|{flag}") '
                f'COMPREPLY=($(compgen -W "{" ".join(options)}" -- "$cur")); return ;;'
            )
        for flag in sorted(c.paths):
            value_cases.append(
                f'        "{" ".join(c.path)}|{flag}") '
                f'COMPREPLY=($(compgen -f -- "$cur")); return ;;'
            )
    return "\n".join(
        [
            "# maestro completion for bash: source <(maestro completion bash)",
            "_maestro() {",
            '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
            '    local path="" candidate w i skip=0',
            f"    local value_flags=' {' '.join(value_flags)} '",
            f"    local known=({known})",
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            '        w="${COMP_WORDS[i]}"',
            "        if ((skip)); then skip=0; continue; fi",
            '        case "$w" in',
            "            --*=*) continue ;;",
            '            -*) [[ "$value_flags" == *" $w "* ]] && skip=1; continue ;;',
            "        esac",
            '        candidate="${path:+$path }$w"',
            '        for k in "${known[@]}"; do',
            '            if [[ "$k" == "$candidate" ]]; then path="$candidate"; break; fi',
            "        done",
            "    done",
            '    case "$path|$prev" in',
            *value_cases,
            "    esac",
            '    if [[ "$value_flags" == *" $prev "* ]]; then COMPREPLY=(); return; fi',
            "    local words",
            '    case "$path" in',
            *cases,
            "    esac",
            '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
            "}",
            "complete -F _maestro maestro",
            "",
        ]
    )


def _zsh(root: Command) -> str:
    return "\n".join(
        [
            "#compdef maestro",
            "# maestro completion for zsh: source <(maestro completion zsh)",
            "autoload -U +X bashcompinit && bashcompinit",
            _bash(root),
        ]
    )


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(root: Command) -> str:
    lines = [
        "# maestro completion for fish: maestro completion fish | source",
        "complete -c maestro -f",
    ]
    for c in _walk(root):
        if not c.path:
            condition = "__fish_use_subcommand"
        else:
            siblings = " ".join(sorted(c.subcommands))
            condition = f"__fish_seen_subcommand_from {c.path[-1]}"
            if siblings:
                condition += f"; and not __fish_seen_subcommand_from {siblings}"
        for name, child in sorted(c.subcommands.items()):
            lines.append(
                f"complete -c maestro -n {_fish_quote(condition)} -a {name} "
                f"-d {_fish_quote(child.help)}"
            )
        for flag, text in sorted(c.flags.items()):
            entry = f"complete -c maestro -n {_fish_quote(condition)} -l {flag[2:]}"
            if flag in c.choices:
                entry += f" -x -a {_fish_quote(' '.join(c.choices[flag]))}"
            elif flag in c.paths:
                entry += " -r -F"
            elif flag in c.takes_value:
                entry += " -x"
            lines.append(f"{entry} -d {_fish_quote(text)}")
    return "\n".join(lines) + "\n"


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` (bash, zsh or fish)."""
    root = command_tree(parser)
    return {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](root)

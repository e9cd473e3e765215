"""The isolation probe's judgement of what the jailed probe saw."""

from __future__ import annotations

import os

from sandbox_service.probe import judge

ENV = {"PATH", "HOME", "LANG"}


def _facts(**changes: object) -> dict[str, object]:
    facts: dict[str, object] = {
        "uid": 64000,
        "euid": 64000,
        "gid": 64000,
        "ppid": 1,
        "env": sorted(ENV),
        "sentinel_visible": False,
        "ns": {"net": 1, "pid": 2, "mnt": 3},
        "connected": False,
    }
    facts.update(changes)
    return facts


def test_a_good_jail_has_no_problems() -> None:
    assert judge(_facts(), uid=64000, env=ENV, arrived=0) == []


def test_each_broken_property_is_named() -> None:
    own_net = os.stat("/proc/self/ns/net").st_ino
    cases = {
        "uid 0": _facts(uid=0, euid=0),
        "not PID 1": _facts(ppid=7),
        "shares a namespace": _facts(ns={"net": own_net, "pid": 2, "mnt": 3}),
        "host's loopback": _facts(connected=True),
        "environment variables": _facts(env=[*sorted(ENV), "ANTHROPIC_API_KEY"]),
        "scratch directory": _facts(sentinel_visible=True),
    }
    for words, facts in cases.items():
        problems = judge(facts, uid=64000, env=ENV, arrived=0)
        assert len(problems) == 1 and words in problems[0], (words, problems)
    assert judge(_facts(), uid=64000, env=ENV, arrived=1) == [
        "the probe reached a listener on the host's loopback"
    ]
    # A probe that said nothing usable is not a pass.
    assert len(judge({}, uid=64000, env=ENV, arrived=0)) == 6

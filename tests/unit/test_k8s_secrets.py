"""scripts/k8s_secrets.py: the credentials Secrets an operator creates for production."""

from __future__ import annotations

import base64

import pytest
import yaml

from maestro.core.auth import hash_token, parse_callers, parse_tokens_file
from scripts.k8s_secrets import main


def test_the_secrets_hold_fresh_tokens_and_the_hashes_that_let_them_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--user", "alice", "--user", "bob"]) == 0
    out = capsys.readouterr()
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out.out)}
    assert set(secrets) == {"maestro-service-auth", "maestro-gateway-tokens"}
    auth = {
        k: base64.b64decode(v).decode() for k, v in secrets["maestro-service-auth"]["data"].items()
    }

    # Each callee answers exactly its callers' tokens.
    sandbox = parse_callers(auth["sandbox-callers"])
    assert sandbox.identify(auth["scheduler-token"]) is not None
    assert sandbox.identify(auth["worker-token"]) is not None
    assert sandbox.identify(auth["gateway-token"]) is None
    worker = parse_callers(auth["worker-callers"])
    assert worker.identify(auth["scheduler-token"]) is not None
    assert worker.identify(auth["gateway-token"]) is None
    scheduler = parse_callers(auth["scheduler-callers"])
    assert [i.name for i in scheduler.identities] == ["gateway"]
    assert scheduler.identify(auth["gateway-token"]) is not None

    # The users' tokens go to stderr once; the gateway's file has only their hashes.
    printed = dict(line.removeprefix("token of ").split(": ") for line in out.err.splitlines())
    assert set(printed) == {"alice", "bob"}
    tokens_file = base64.b64decode(secrets["maestro-gateway-tokens"]["data"]["tokens"]).decode()
    assert printed["alice"] not in tokens_file and hash_token(printed["alice"]) in tokens_file
    table = parse_tokens_file(tokens_file)
    assert table.identify(printed["bob"]).name == "bob"  # type: ignore[union-attr]


def test_every_run_makes_new_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--user", "alice"])
    first = capsys.readouterr().out
    main(["--user", "alice"])
    assert capsys.readouterr().out != first

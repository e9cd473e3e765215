"""Tokens, callers, limits, page tokens and status details: pure logic."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from gateway.convert import (
    decode_artifact_token,
    decode_page_token,
    encode_artifact_token,
)
from maestro.cli.credentials import CALLERS, ensure_local_credentials, read_local_token
from maestro.cli.options import gateway_target, is_loopback
from maestro.core.auth import (
    AuthConfigError,
    BearerAuthenticator,
    Identity,
    TokenTable,
    hash_token,
    new_token,
    parse_callers,
    parse_tokens_file,
    service_authenticator,
)
from maestro.core.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from maestro.core.limits import ClientLimits, LimitSettings
from maestro.core.status import MAX_STATUS_BYTES, details_from_trailers, status_for
from maestro.workflow import WorkflowError, WorkflowProblem


def test_tokens_are_checked_against_hashes_only() -> None:
    alice, bob = new_token(), new_token()
    table = parse_tokens_file(
        f"# comment\nalice {hash_token(alice)}\n\nbob {hash_token(bob)}  # ops\n", admins=["bob"]
    )
    assert table.identify(alice) == Identity("alice")
    assert table.identify(bob) == Identity("bob", admin=True)
    assert table.identify(alice + "x") is None
    assert table.identify("\udfff") is None  # never raises on odd input
    auth = BearerAuthenticator(table, realm="gw")
    assert auth.authenticate([("authorization", f"Bearer {alice}")]).name == "alice"
    assert auth.authenticate([("authorization", f"bearer  {alice} ")]).name == "alice"
    with pytest.raises(Unauthenticated, match="needs a bearer token"):
        auth.authenticate([("authorization", f"Basic {alice}")])
    with pytest.raises(Unauthenticated, match="does not accept"):
        auth.authenticate([("authorization", "Bearer " + "x" * 10_000)])


@pytest.mark.parametrize(
    "text",
    ["", "alice\n", "alice sha256:abc\n", f"al ice {hash_token('x')}\n", f"{hash_token('x')}\n"],
)
def test_malformed_tokens_files_are_refused_with_the_line(text: str) -> None:
    with pytest.raises(AuthConfigError):
        parse_tokens_file(text)


def test_service_callers_come_from_the_environment_and_are_required() -> None:
    token = new_token()
    callers = parse_callers(f"scheduler={hash_token(token)}")
    assert callers.identify(token) == Identity("scheduler")
    with pytest.raises(AuthConfigError, match="MAESTRO_SERVICE_CALLERS"):
        service_authenticator("worker", env={})
    with pytest.raises(AuthConfigError):
        parse_callers("scheduler=md5:abc")
    open_door = service_authenticator("worker", env={"MAESTRO_SERVICE_AUTH": "disabled"})
    assert open_door.authenticate(None).name == "anonymous"
    checked = service_authenticator(
        "worker", env={"MAESTRO_SERVICE_CALLERS": f"scheduler={hash_token(token)}"}
    )
    assert checked.authenticate([("authorization", f"Bearer {token}")]).name == "scheduler"


def test_local_credentials_are_private_and_each_service_answers_only_its_callers(
    tmp_path: Path,
) -> None:
    data = tmp_path / ".maestro"
    creds = ensure_local_credentials(data)
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    for name in ("token", "gateway-tokens", "service.key"):
        assert oct((data / name).stat().st_mode & 0o777) == "0o600"
    assert read_local_token(data) == creds.user_token
    # The same on the next start: services restarted later still agree.
    assert ensure_local_credentials(data).service_token("scheduler") == creds.service_token(
        "scheduler"
    )
    worker_callers = parse_callers(creds.callers_of("persona_service"))
    assert worker_callers.identify(creds.service_token("scheduler")) == Identity("scheduler")
    assert worker_callers.identify(creds.service_token("gateway")) is None
    assert worker_callers.identify(creds.user_token) is None
    assert CALLERS["sandbox_service"] == ("scheduler", "persona_service")
    gateway_tokens = parse_tokens_file((data / "gateway-tokens").read_text())
    assert gateway_tokens.identify(creds.user_token) == Identity("local")


def test_the_cli_uses_the_local_token_only_for_a_gateway_on_this_machine(tmp_path: Path) -> None:
    creds = ensure_local_credentials(tmp_path / ".maestro")
    local = gateway_target(
        "127.0.0.1:5000", token=None, ca_file=None, tls=False, env={}, data_dir=creds.data_dir
    )
    assert local.token == creds.user_token
    remote = gateway_target(
        "maestro.example:443", token=None, ca_file=None, tls=True, env={}, data_dir=creds.data_dir
    )
    assert remote.token is None and remote.tls
    explicit = gateway_target(
        "h:1", token=None, ca_file=None, tls=False, env={"MAESTRO_TOKEN": "mst_e"}
    )
    assert explicit.token == "mst_e"
    assert is_loopback("localhost:1") and is_loopback("[::1]:1") and not is_loopback("10.0.0.1:1")


def test_rate_limits_refill_over_time_and_say_when_to_retry() -> None:
    now = [0.0]
    limits = ClientLimits(
        LimitSettings(requests_per_second=2, burst=3, max_streams=1), clock=lambda: now[0]
    )
    for _ in range(3):
        limits.admit("a")
    with pytest.raises(ResourceExhausted) as caught:
        limits.admit("a")
    assert caught.value.retry_after == pytest.approx(0.5)
    limits.admit("b")  # clients are independent
    now[0] += 0.5
    limits.admit("a")
    with limits.stream("a"), pytest.raises(ResourceExhausted), limits.stream("a"):
        pass
    with limits.stream("a"):
        pass  # released when the first stream ended


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        _b64(json.dumps({"t": "2026-01-01T00:00:00+00:00", "id": "x"}).encode()),
        _b64(("[" * 5000 + "]" * 5000).encode()),
        _b64("r1.1.\udfff".encode("utf-8", "surrogatepass")),
        _b64(b"r1.99999999999999999999999.0123456789abcdef"),
        _b64(b"r1.1.0123456789ABCDEF"),
        _b64(b"r1.1.0123456789abcdef\n"),
        "A" * 5000,
        _b64(b"a1.../etc/passwd"),
    ],
)
def test_page_tokens_are_parsed_strictly(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token)
    assert caught.value.field == "page_token"
    with pytest.raises(InvalidArgument):
        decode_artifact_token(token)


def test_artifact_page_tokens_round_trip() -> None:
    assert decode_artifact_token(encode_artifact_token("docs/é.md")) == ("docs/é.md", 0)
    # Listing every version, a page ends inside a path: the version says where.
    assert decode_artifact_token(encode_artifact_token("app/1.py", 3)) == ("app/1.py", 3)
    with pytest.raises(InvalidArgument):
        decode_artifact_token(encode_artifact_token(".git/config"))


def test_status_details_are_bounded_and_round_trip() -> None:
    problems = [WorkflowProblem(field=f"steps[s{i}].x", reason="y" * 400) for i in range(40)]
    err = WorkflowError(problems)
    status = status_for(err)
    assert status.ByteSize() <= MAX_STATUS_BYTES
    back = details_from_trailers([("grpc-status-details-bin", status.SerializeToString())])
    assert back.error_reason == "WORKFLOW_INVALID"
    assert 1 <= len(back.violations) <= 20
    assert back.violations[0][0] == "steps[s0].x"
    assert re.fullmatch(r"[A-Z_]+", back.error_reason)
    # A peer's corrupt details never make the client fail.
    assert details_from_trailers([("grpc-status-details-bin", b"\xff\x00garbage")]).violations == ()


def test_token_table_rejects_malformed_hashes() -> None:
    with pytest.raises(AuthConfigError):
        TokenTable([("sha256:XYZ", Identity("a"))])

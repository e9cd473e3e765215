"""The sandbox service over real gRPC, with its real isolation.

One service process (started like the local stack starts it, with secrets in its
environment) serves every test here. Hostile generated code runs as a pytest check:
each case ends within its limit, the result says why, and the service is still SERVING
and answers the next request.
"""

from __future__ import annotations

import asyncio
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

import maestro
from maestro.core.errors import InvalidArgument
from maestro.sandbox.client import SandboxClient
from maestro.sandbox.gate import Threshold, evaluate
from maestro.sandbox.models import (
    CheckName,
    CheckOutcome,
    CheckReport,
    CheckRequest,
    CheckResult,
    Isolation,
    SandboxFile,
)
from tests.integration.sandbox_process import (
    SandboxProcess,
    health_status,
    processes_of_uids,
    sandbox_process,
)
from tests.integration.test_offline_artifacts_run import SDLC, run_chain

SECRET = "sk-ant-sandbox-test-secret-value"
DATABASE_URL = "postgresql://maestro:hunter2@db.internal/maestro"
RUN_TIMEOUT = 60.0
ALL_CHECKS = (CheckName.PYTEST, CheckName.RUFF, CheckName.COMPILE)
MAESTRO_SOURCES = Path(maestro.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    root = tmp_path_factory.mktemp("sandbox")
    # Stand-ins for Maestro's data directory and the user's home, with secrets in them.
    for name in ("data/maestro.db", "home/.config/anthropic/key"):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SECRET)
    env = {
        "ANTHROPIC_API_KEY": SECRET,
        "MAESTRO_SCHEDULER_DATABASE": DATABASE_URL,
        "DATABASE_URL": DATABASE_URL,
        "HOME": str(root / "home"),
    }
    with sandbox_process(root / "service", env) as process:
        yield process


def _files(tests: str, **extra: str) -> tuple[SandboxFile, ...]:
    files = {"tests/test_generated.py": textwrap.dedent(tests), **extra}
    return tuple(SandboxFile(path=p, content=c.encode()) for p, c in files.items())


async def _run(
    sandbox: SandboxProcess,
    files: tuple[SandboxFile, ...],
    checks: tuple[CheckName, ...] = (CheckName.PYTEST,),
    *,
    coverage: bool = False,
) -> CheckReport:
    async with SandboxClient(sandbox.address, heartbeat_timeout=10) as client:
        return await client.run_checks(
            CheckRequest(files=files, checks=checks, coverage=coverage, label="test"),
            timeout=RUN_TIMEOUT,
        )


async def _still_serving(sandbox: SandboxProcess) -> None:
    """The service is SERVING and answers the next request."""
    assert await health_status(sandbox.address) == health_pb2.HealthCheckResponse.SERVING
    report = await _run(sandbox, _files("def test_fine():\n    assert True\n"))
    assert report.metrics["tests_passed"] == 1
    # Nothing of the sandbox's users is left running on the host.
    assert processes_of_uids(range(sandbox.first_uid, sandbox.first_uid + 2)) == []


def _pytest(report: CheckReport) -> CheckResult:
    assert report.isolation is Isolation.NAMESPACES
    (result,) = report.checks
    assert result.check is CheckName.PYTEST
    return result


async def test_a_project_is_measured_by_all_three_checks(sandbox: SandboxProcess) -> None:
    files = _files(
        """
        from app.core import add

        def test_add():
            assert add(2, 3) == 5

        def test_wrong():
            assert add(2, 2) == 5, "arithmetic"
        """,
        **{
            "app/__init__.py": "",
            "app/core.py": "import os\n\n\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n"
            "    return a - b\n",
            "broken.py": "def oops(:\n",
        },
    )
    report = await _run(sandbox, files, ALL_CHECKS, coverage=True)
    assert report.isolation is Isolation.NAMESPACES
    assert [c.outcome for c in report.checks] == [CheckOutcome.RAN] * 3
    pytest_result, ruff_result, compile_result = report.checks
    assert set(ruff_result.findings_by_rule) == {"F401", "syntax-error"}
    assert ruff_result.findings_by_rule["F401"] == 1
    assert {k: v for k, v in report.metrics.items() if k != "coverage_percent"} == {
        "tests_collected": 2,
        "tests_passed": 1,
        "tests_failed": 1,
        "tests_errors": 0,
        "tests_skipped": 0,
        "lint_errors": sum(ruff_result.findings_by_rule.values()),
        "compile_errors": 1,
    }
    # app/core.py: 5 statements, `sub`'s body never runs.
    assert report.metrics["coverage_percent"] == 80.0
    (failure,) = pytest_result.failures
    assert failure.test == "tests.test_generated::test_wrong"
    assert "AssertionError: arithmetic" in failure.message
    assert {(f.rule, f.path, f.line) for f in ruff_result.findings} >= {("F401", "app/core.py", 1)}
    (error,) = compile_result.compile_errors
    assert (error.path, error.line) == ("broken.py", 1)
    verdict = evaluate({"tests_failed": Threshold(max=0)}, report)
    assert not verdict.passed


async def test_host_loopback_is_out_of_reach(sandbox: SandboxProcess) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        report = await _run(
            sandbox,
            _files(
                f"""
                import socket
                import pytest

                def test_host_listener_is_unreachable():
                    with pytest.raises(OSError):
                        socket.create_connection(("127.0.0.1", {port}), timeout=2)

                def test_own_loopback_works():
                    with socket.create_server(("127.0.0.1", 0)) as server:
                        port = server.getsockname()[1]
                        socket.create_connection(("127.0.0.1", port), timeout=2).close()
                """
            ),
        )
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection ever arrived
    result = _pytest(report)
    assert result.metrics["tests_passed"] == 2, result
    await _still_serving(sandbox)


async def test_no_route_and_no_name_resolution(sandbox: SandboxProcess) -> None:
    report = await _run(
        sandbox,
        _files(
            """
            import socket
            import pytest

            def test_resolving_a_public_name_fails():
                with pytest.raises(OSError):
                    socket.getaddrinfo("example.com", 443)

            def test_connecting_to_a_public_address_fails():
                # Only without a route: a broken sandbox must not send anything out.
                routes = open("/proc/net/route").read().splitlines()[1:]
                assert routes == []
                with pytest.raises(OSError, match="unreachable"):
                    socket.create_connection(("192.0.2.1", 443), timeout=2)
            """
        ),
    )
    result = _pytest(report)
    assert result.metrics["tests_passed"] == 2, result
    await _still_serving(sandbox)


async def test_no_secrets_in_the_environment(sandbox: SandboxProcess) -> None:
    report = await _run(
        sandbox,
        _files(
            f"""
            import os

            def test_clean_environment():
                assert "ANTHROPIC_API_KEY" not in os.environ
                assert "DATABASE_URL" not in os.environ
                assert not [k for k in os.environ if k.startswith("MAESTRO_")]
                assert not [k for k, v in os.environ.items() if {SECRET!r} in v]

            def test_no_other_process_s_environment():
                for pid in os.listdir("/proc"):
                    if pid.isdigit() and int(pid) != os.getpid():
                        try:
                            data = open(f"/proc/{{pid}}/environ", "rb").read()
                        except OSError:
                            continue
                        assert {SECRET!r}.encode() not in data
            """
        ),
    )
    result = _pytest(report)
    assert result.metrics["tests_passed"] == 2, result
    await _still_serving(sandbox)


async def test_data_dir_home_and_sources_are_not_visible(sandbox: SandboxProcess) -> None:
    root = sandbox.scratch.parent.parent
    hidden = [
        root / "data" / "maestro.db",
        root / "home" / ".config" / "anthropic" / "key",
        MAESTRO_SOURCES / "pyproject.toml",
        sandbox.scratch,
    ]
    assert all(p.exists() for p in hidden)
    report = await _run(
        sandbox,
        _files(
            f"""
            import os

            def test_host_files_are_not_visible():
                for path in {[str(p) for p in hidden]!r}:
                    assert not os.path.exists(path), path

            def test_the_real_home_shows_only_the_interpreter():
                home = os.path.expanduser("~root")
                if os.path.isdir(home):
                    assert set(os.listdir(home)) <= {{".pyenv"}}
            """
        ),
    )
    result = _pytest(report)
    assert result.metrics["tests_passed"] == 2, result
    await _still_serving(sandbox)


async def test_a_fork_bomb_ends_at_the_wall_time(sandbox: SandboxProcess) -> None:
    started = time.monotonic()
    report = await _run(
        sandbox,
        _files(
            """
            import os

            def test_bomb():
                while True:
                    try:
                        os.fork()
                    except OSError:
                        pass
            """
        ),
    )
    result = _pytest(report)
    assert result.outcome in (CheckOutcome.TIMED_OUT, CheckOutcome.LIMIT_EXCEEDED), result
    assert "limit" in result.reason
    assert result.metrics == {}
    assert time.monotonic() - started < 4 + 15
    await _still_serving(sandbox)


async def test_allocating_4_gib_fails_at_the_memory_limit(sandbox: SandboxProcess) -> None:
    report = await _run(
        sandbox, _files("def test_hog():\n    block = bytearray(4 * 1024**3)\n    assert block\n")
    )
    result = _pytest(report)
    assert result.outcome is CheckOutcome.RAN
    assert result.metrics["tests_failed"] == 1
    assert "MemoryError" in result.failures[0].message
    await _still_serving(sandbox)


async def test_writing_10_gib_fails_at_the_file_and_disk_limits(sandbox: SandboxProcess) -> None:
    report = await _run(
        sandbox,
        _files(
            """
            CHUNK = b"x" * 1024 * 1024

            def test_one_huge_file():
                with open("huge.bin", "wb") as out:
                    for _ in range(10 * 1024):
                        out.write(CHUNK)

            def test_many_files():
                for index in range(10 * 1024):
                    with open(f"part-{index}.bin", "wb") as out:
                        out.write(CHUNK)
            """
        ),
    )
    result = _pytest(report)
    assert result.outcome is CheckOutcome.RAN
    assert result.metrics["tests_failed"] == 2
    messages = {f.test.rsplit("::", 1)[1]: f.message for f in result.failures}
    assert "File too large" in messages["test_one_huge_file"]
    assert "No space left on device" in messages["test_many_files"]
    await _still_serving(sandbox)


async def test_printing_1_gib_stops_at_the_output_limit(sandbox: SandboxProcess) -> None:
    report = await _run(
        sandbox,
        _files(
            """
            import sys

            def test_chatty():
                line = "x" * 1024 * 1024
                for _ in range(1024):
                    sys.stdout.write(line)
            """
        ),
    )
    result = _pytest(report)
    assert result.outcome is CheckOutcome.LIMIT_EXCEEDED
    assert result.reason.startswith("output limit of 1048576 bytes exceeded")
    assert len(result.output_tail) <= 2000
    await _still_serving(sandbox)


async def test_sleeping_forever_ends_at_the_wall_time(sandbox: SandboxProcess) -> None:
    started = time.monotonic()
    report = await _run(
        sandbox, _files("import time\n\n\ndef test_nap():\n    time.sleep(10**9)\n")
    )
    result = _pytest(report)
    assert result.outcome is CheckOutcome.TIMED_OUT
    assert result.reason == "wall-time limit of 4s reached; every process killed"
    assert 4 <= time.monotonic() - started < 4 + 15
    await _still_serving(sandbox)


async def test_spinning_ends_at_the_cpu_limit(sandbox: SandboxProcess) -> None:
    report = await _run(sandbox, _files("def test_spin():\n    while True:\n        pass\n"))
    result = _pytest(report)
    assert result.outcome is CheckOutcome.LIMIT_EXCEEDED
    assert result.reason == "CPU-time limit of 2s per process reached"
    await _still_serving(sandbox)


async def test_a_missing_dependency_is_named(sandbox: SandboxProcess) -> None:
    report = await _run(
        sandbox,
        _files(
            "import requests\n\n\ndef test_get():\n    assert requests\n",
            **{"tests/test_other.py": "import app.missing\n", "app/__init__.py": ""},
        ),
    )
    result = _pytest(report)
    assert result.outcome is CheckOutcome.RAN
    assert result.missing_dependencies == ("requests",)
    assert result.reason == "dependency not available in the sandbox: requests"
    assert result.metrics["tests_errors"] == 2


async def test_bad_requests_are_invalid_arguments(sandbox: SandboxProcess) -> None:
    async with SandboxClient(sandbox.address) as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.run_checks(
                CheckRequest(
                    files=(SandboxFile(path="../escape.py", content=b""),),
                    checks=(CheckName.RUFF,),
                ),
                timeout=10,
            )
    assert caught.value.field == "files[0].path"
    assert "'..'" in caught.value.reason


async def test_concurrent_runs_each_get_their_own_scratch(sandbox: SandboxProcess) -> None:
    writer = """
    import os
    from pathlib import Path

    def test_alone():
        Path("/tmp/marker").write_text("{me}")
        Path("mine").write_text("{me}")
        assert sorted(os.listdir(".")) == ["mine", "tests"]
        assert Path("/tmp/marker").read_text() == "{me}"
    """
    reports = await asyncio.gather(
        *(_run(sandbox, _files(writer.format(me=me))) for me in ("first", "second"))
    )
    for report in reports:
        assert _pytest(report).metrics["tests_passed"] == 1
    # Every run's scratch directory is gone; only the service's own area is left.
    (area,) = sandbox.scratch.iterdir()
    assert list(area.iterdir()) == []


async def test_offline_sdlc_parallel_output_passes_all_three_checks(
    sandbox: SandboxProcess,
) -> None:
    outputs = await run_chain(SDLC)
    files = tuple(
        SandboxFile(path=f.path, content=f.content.encode())
        for output in outputs.values()
        for f in output.files
    )
    assert "pyproject.toml" in {f.path for f in files}
    report = await _run(sandbox, files, ALL_CHECKS, coverage=True)
    assert [c.outcome for c in report.checks] == [CheckOutcome.RAN] * 3, report
    thresholds = {
        "tests_passed": Threshold(min=15),
        "tests_failed": Threshold(max=0),
        "tests_errors": Threshold(max=0),
        "lint_errors": Threshold(max=0),
        "compile_errors": Threshold(max=0),
        "coverage_percent": Threshold(min=50),
    }
    verdict = evaluate(thresholds, report)
    assert verdict.passed, verdict.summary()

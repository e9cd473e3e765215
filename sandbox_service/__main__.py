"""Starts the sandbox: `python -m sandbox_service` (settings from MAESTRO_SANDBOX_*)."""

from __future__ import annotations

import asyncio
import logging

from maestro.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from maestro.core.log_setup import configure_service_logging
from maestro.core.observability import start_observability
from maestro.core.serving import serve
from maestro.core.settings import load_settings
from maestro.sandbox.models import Isolation
from sandbox_service.checks import ReportBounds
from sandbox_service.convert import RequestLimits
from sandbox_service.isolation import Jail
from sandbox_service.jail_spec import Limits
from sandbox_service.observe import MeteredSandboxRunner
from sandbox_service.servicer import SandboxServicer
from sandbox_service.settings import SandboxSettings
from sandbox_service.toolchain import ToolchainError, host_view

log = logging.getLogger("sandbox_service")


def limits_from(settings: SandboxSettings) -> Limits:
    return Limits(
        wall_seconds=settings.wall_seconds,
        cpu_seconds=settings.cpu_seconds,
        memory_bytes=settings.memory_bytes,
        processes=settings.processes,
        open_files=settings.open_files,
        file_bytes=settings.file_bytes,
        disk_bytes=settings.disk_bytes,
        output_bytes=settings.output_bytes,
        report_bytes=settings.report_bytes,
    )


async def main(settings: SandboxSettings) -> None:
    try:
        view = host_view()
    except ToolchainError as err:
        raise SystemExit(f"the sandbox's toolchain is not usable: {err}") from None
    isolation = Isolation(settings.isolation)
    if isolation is Isolation.NONE:
        log.warning(
            "MAESTRO_SANDBOX_ISOLATION=none: generated code runs WITHOUT isolation, as this "
            "service's user; every result says isolation=none"
        )
    runner = MeteredSandboxRunner(
        Jail(isolation, view, limits_from(settings)),
        scratch_root=settings.scratch_dir,
        max_concurrent=settings.max_concurrent_runs,
        first_uid=settings.sandbox_uid,
        heartbeat_interval=settings.heartbeat_interval_seconds,
        max_run_seconds=settings.max_run_seconds,
        bounds=ReportBounds(
            max_items=settings.max_report_items,
            message_chars=settings.message_chars,
            output_tail_chars=settings.output_tail_chars,
        ),
        ruff_select=settings.ruff_select,
    )
    await runner.start()
    observed = start_observability("sandbox_service", settings)

    async def on_stop() -> None:
        await runner.close()
        observed.close()

    limits = RequestLimits(
        max_files=settings.max_files,
        max_file_bytes=settings.max_file_bytes,
        max_total_bytes=settings.max_total_bytes,
    )
    await serve(
        settings,
        service_names=[sandbox_pb2.DESCRIPTOR.services_by_name["SandboxService"].full_name],
        register=lambda server: sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(
            SandboxServicer(runner, limits), server
        ),
        on_stop=on_stop,
        readiness=runner.readiness,
    )


if __name__ == "__main__":
    settings = load_settings(SandboxSettings)
    configure_service_logging("sandbox_service", settings)
    asyncio.run(main(settings))

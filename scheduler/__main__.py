"""Starts the scheduler: `python -m scheduler` (settings from MAESTRO_SCHEDULER_*)."""

from __future__ import annotations

import asyncio

from maestro.api.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from maestro.core.errors import MaestroError
from maestro.core.log_setup import configure_logging
from maestro.core.serving import serve
from maestro.core.settings import load_settings
from maestro.store import open_store
from scheduler.engine import Engine
from scheduler.servicer import SchedulerServicer
from scheduler.settings import SchedulerSettings
from scheduler.worker_client import WorkerClient


async def main(settings: SchedulerSettings) -> None:
    try:
        store = await open_store(settings.database, writer=True)
    except MaestroError as err:
        raise SystemExit(f"cannot open the store: {err.message}") from None
    worker = WorkerClient(
        settings.worker_address, heartbeat_timeout=settings.heartbeat_timeout_seconds
    )
    engine = Engine(store, worker, settings)
    try:
        await engine.recover()
    except BaseException:
        # Release the store's thread and lock, or the failed start would hang here.
        await engine.shutdown()
        await worker.close()
        await store.close()
        raise

    async def on_stop() -> None:
        await engine.shutdown()
        await worker.close()
        await store.close()

    await serve(
        settings,
        service_names=[scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name],
        register=lambda server: scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(
            SchedulerServicer(engine), server
        ),
        on_stop=on_stop,
        readiness=store.check,
    )


if __name__ == "__main__":
    settings = load_settings(SchedulerSettings)
    configure_logging("scheduler", settings.log_level)
    asyncio.run(main(settings))

"""Starts the scheduler: `python -m scheduler` (settings from MAESTRO_SCHEDULER_*)."""

from __future__ import annotations

import asyncio
import logging

from maestro.api.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from maestro.core.errors import MaestroError
from maestro.core.log_setup import configure_service_logging
from maestro.core.observability import start_observability
from maestro.core.serving import serve
from maestro.core.settings import load_settings
from maestro.store import open_store, redact_url
from scheduler.capacity import parse_api_keys
from scheduler.engine import Engine
from scheduler.gates import close_sandboxes
from scheduler.observe import EventMeter, observe_capacity, observe_engine
from scheduler.servicer import SchedulerServicer
from scheduler.settings import SchedulerSettings
from scheduler.watch import ChangeFeed
from scheduler.worker_client import WorkerPools, parse_pools

log = logging.getLogger("scheduler")


async def main(settings: SchedulerSettings) -> None:
    observed = start_observability("scheduler", settings)
    try:
        pools = parse_pools(settings.worker_pools, settings.worker_address)
    except ValueError as err:
        raise SystemExit(f"invalid MAESTRO_SCHEDULER_WORKER_POOLS: {err}") from None
    try:
        store = await open_store(settings.database, writer=True)
    except MaestroError as err:
        raise SystemExit(f"cannot open the store: {err.message}") from None
    log.info(
        "scheduler %s on %s; worker pools: %s",
        settings.scheduler_id,
        redact_url(settings.database),
        ", ".join(f"{name}={address}" for name, address in pools.items()),
    )
    feed = ChangeFeed()
    store.on_change(feed.publish)
    meter = EventMeter(store)
    if settings.metrics_port is not None:
        # Only with an endpoint to read them from.
        store.on_events(meter.take)
        meter.start()
    workers = WorkerPools(
        pools,
        heartbeat_timeout=settings.heartbeat_timeout_seconds,
        api_keys=parse_api_keys(settings.api_keys),
        dispatch_streams=settings.dispatch_streams,
        dispatch_stream_seconds=settings.dispatch_stream_seconds,
    )
    engine = Engine(store, workers, settings)
    observe_engine(
        lambda: engine.admission.in_flight,
        lambda: engine.admission.waiting,
        lambda: len(engine.driven_run_ids),
    )
    observe_capacity(lambda: engine.capacity.waiting)
    try:
        await engine.start()
    except BaseException as err:
        # Release the store's threads and lock, or the failed start would hang here.
        await engine.shutdown()
        await workers.close()
        await meter.close()
        await store.close()
        observed.close()
        if isinstance(err, MaestroError):
            raise SystemExit(f"cannot start: {err.message}") from None
        raise

    async def on_drain() -> None:
        await engine.drain()
        feed.close()

    async def on_stop() -> None:
        feed.close()
        await engine.shutdown()
        await workers.close()
        await close_sandboxes()
        await meter.close()
        await store.close()
        observed.close()

    await serve(
        settings,
        service_names=[scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name],
        register=lambda server: scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(
            SchedulerServicer(engine, feed), server
        ),
        on_stop=on_stop,
        on_drain=on_drain,
        readiness=engine.readiness,
    )


if __name__ == "__main__":
    settings = load_settings(SchedulerSettings)
    configure_service_logging("scheduler", settings)
    asyncio.run(main(settings))

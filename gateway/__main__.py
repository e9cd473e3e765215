"""Starts the gateway: `python -m gateway` (settings from MAESTRO_GATEWAY_*)."""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge

from gateway.events import EventHub
from gateway.scheduler_client import SchedulerClient
from gateway.servicer import MaestroServicer
from gateway.settings import GatewaySettings
from maestro.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from maestro.core.auth import AuthConfigError, BearerAuthenticator, load_tokens_file
from maestro.core.errors import MaestroError
from maestro.core.limits import ClientLimits, LimitSettings
from maestro.core.log_setup import configure_service_logging
from maestro.core.metrics import in_flight
from maestro.core.observability import start_observability
from maestro.core.serving import TlsFiles, serve
from maestro.core.settings import load_settings
from maestro.store import open_store


async def main(settings: GatewaySettings) -> None:
    observed = start_observability("gateway", settings)
    _gauges()
    try:
        tokens = load_tokens_file(settings.tokens_file, admins=settings.admins)
    except AuthConfigError as err:
        raise SystemExit(f"cannot start: {err}") from None
    try:
        store = await open_store(settings.database)
    except MaestroError as err:
        raise SystemExit(f"cannot open the store: {err.message}") from None
    scheduler = SchedulerClient(
        settings.scheduler_address, timeout=settings.scheduler_timeout_seconds
    )
    hub = EventHub(store, poll_seconds=settings.event_poll_seconds)
    await hub.start(settings.scheduler_address)

    async def on_stop() -> None:
        await hub.close()
        await scheduler.close()
        await store.close()
        observed.close()

    tls = (
        TlsFiles(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_cert_file is not None and settings.tls_key_file is not None
        else None
    )
    await serve(
        settings,
        service_names=[gateway_pb2.DESCRIPTOR.services_by_name["MaestroService"].full_name],
        register=lambda server: gateway_pb2_grpc.add_MaestroServiceServicer_to_server(
            MaestroServicer(store, scheduler, hub), server
        ),
        on_stop=on_stop,
        readiness=store.check_schema,
        authenticator=BearerAuthenticator(tokens, realm="the Maestro gateway"),
        limits=ClientLimits(
            LimitSettings(
                requests_per_second=settings.rate_limit_per_second,
                burst=settings.rate_limit_burst,
                max_streams=settings.max_streams_per_client,
            )
        ),
        max_receive_bytes=settings.max_request_bytes,
        tls=tls,
    )


def _gauges() -> None:
    followers = Gauge(
        "maestro_event_stream_followers",
        "Event streams (StreamRunEvents and StreamRunEventBatches) open on this gateway.",
    )
    followers.set_function(
        lambda: in_flight("StreamRunEvents") + in_flight("StreamRunEventBatches")
    )


if __name__ == "__main__":
    settings = load_settings(GatewaySettings)
    configure_service_logging("gateway", settings)
    asyncio.run(main(settings))

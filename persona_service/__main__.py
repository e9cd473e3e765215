"""Starts a persona worker: `python -m persona_service` (settings from MAESTRO_WORKER_*)."""

from __future__ import annotations

import asyncio
import logging

from maestro.api.worker.v1 import worker_pb2, worker_pb2_grpc
from maestro.core.log_setup import configure_service_logging
from maestro.core.observability import start_observability
from maestro.core.serving import serve
from maestro.core.settings import load_settings
from persona_service.catalog import PriceTable
from persona_service.checks import CheckRunner, sandbox_check_runner
from persona_service.lazy_provider import LazyProvider
from persona_service.models import Provider
from persona_service.observe import MeteredStepRunner
from persona_service.providers import make_provider
from persona_service.servicer import WorkerServicer
from persona_service.settings import WorkerSettings

log = logging.getLogger("persona_service")


def build_providers(
    settings: WorkerSettings, checks: CheckRunner | None = None
) -> dict[str, Provider]:
    """Every provider this worker can serve; anthropic only with a key, bench if enabled."""
    names = ["offline", "anthropic"] if settings.anthropic_api_key else ["offline"]
    if settings.enable_bench_provider:
        names.append("bench")
    return {name: make_provider(name, settings, checks=checks) for name in names}


async def main(settings: WorkerSettings) -> None:
    observed = start_observability("persona_service", settings)
    checks = sandbox_check_runner(settings.sandbox_address) if settings.sandbox_address else None
    providers = build_providers(settings, checks)
    default = settings.default_provider
    if default not in providers:
        raise SystemExit(
            "MAESTRO_WORKER_PROVIDER=anthropic needs ANTHROPIC_API_KEY; set the key or use "
            "MAESTRO_WORKER_PROVIDER=offline"
        )
    if default == "offline":
        log.warning(
            "using the offline provider by default (no ANTHROPIC_API_KEY): results are "
            "deterministic templates, labelled provider=offline"
        )
    else:
        log.info(
            "anthropic provider: model %s, effort %s, idle timeout %gs, run_checks %s",
            settings.anthropic_model,
            settings.anthropic_effort or "the model's default",
            settings.idle_timeout_seconds,
            "on" if settings.sandbox_address else "off (no MAESTRO_WORKER_SANDBOX_ADDRESS)",
        )
    runner = MeteredStepRunner(
        providers,
        default_provider=default,
        heartbeat_interval=settings.heartbeat_interval_seconds,
        prices=PriceTable(settings.prices),
    )

    async def on_stop() -> None:
        for provider in providers.values():
            await provider.aclose()
        if checks is not None:
            await checks.aclose()
        observed.close()

    servicer = WorkerServicer(runner, settings.max_step_seconds)

    async def on_drain() -> None:
        servicer.drain()

    await serve(
        settings,
        service_names=[worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name],
        register=lambda server: worker_pb2_grpc.add_WorkerServiceServicer_to_server(
            servicer, server
        ),
        on_stop=on_stop,
        on_drain=on_drain,
        on_serving=lambda: warm_up(providers),
    )


# After the services started beside this one (a local stack is healthy in about 1 s,
# this worker first): see persona_service/lazy_provider.py.
WARM_UP_DELAY_SECONDS = 1.0


def warm_up(providers: dict[str, Provider]) -> None:
    """Builds lazily built providers in the background, soon after the worker serves."""
    for provider in providers.values():
        if isinstance(provider, LazyProvider):
            provider.warm_up(WARM_UP_DELAY_SECONDS)


if __name__ == "__main__":
    settings = load_settings(WorkerSettings)
    configure_service_logging("persona_service", settings)
    asyncio.run(main(settings))

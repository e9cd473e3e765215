"""OpenTelemetry traces: on when an OTLP endpoint is configured, off (and free) otherwise.

Settings are OpenTelemetry's own environment variables, read by its SDK:
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` turns tracing on
(an `http://` endpoint is plaintext), `OTEL_SERVICE_NAME` overrides the service's name,
`OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` sample, `OTEL_BSP_SCHEDULE_DELAY` sets
how often spans are sent, and `OTEL_SDK_DISABLED=true` turns it off again.

One trace follows a run: the gateway's CreateRun calls the scheduler, whose run task
starts inside that call's context, so every ExecuteStep it sends to a worker, the
worker's model calls and its calls to the sandbox carry the same trace id (the gRPC
instrumentation puts it in each call's metadata). Spans name the run, step and attempt
in `maestro.run_id`, `maestro.step_id` and `maestro.attempt`. A run re-driven after a
scheduler restart starts a new trace for each step attempt, with the same attributes.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span

log = logging.getLogger(__name__)

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
RUN_ID = "maestro.run_id"
STEP_ID = "maestro.step_id"
ATTEMPT = "maestro.attempt"
_RUN_PREFIX = "runs/"
# Calls that say nothing about a run: probes and reflection make no spans.
_UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")

_server_interceptor: Any = None
_tracing_on = False
"""Whether `configure_tracing` installed a tracer provider in this process. Maestro's own
spans (`span`) are made only then: a provider installed some other way (an
OpenTelemetry distro, a test's in-memory one) gets none of them."""


def tracing_endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """The configured OTLP endpoint, or None when tracing is off."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    for name in ENDPOINT_ENVS:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


@dataclass
class Tracing:
    """The process's tracer provider; `close` sends what is still buffered."""

    provider: Any
    endpoint: str

    def close(self) -> None:
        """Flushes and stops the exporter (call once, when the service stops)."""
        self.provider.shutdown()


def configure_tracing(service: str) -> Tracing | None:
    """Sets up tracing for this process when an endpoint is configured.

    Installs the tracer provider with an OTLP exporter, instruments every grpc.aio
    channel the process opens (so calls carry the trace context), and prepares the
    server interceptor that `server_interceptors` hands to the server.

    Args:
        service: The default `service.name` (OTEL_SERVICE_NAME wins).

    Returns:
        The provider to close at exit, or None when tracing is off.
    """
    endpoint = tracing_endpoint()
    if endpoint is None:
        return None
    # Imported here: a service without tracing never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    global _server_interceptor, _tracing_on
    name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or service
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracing_on = True
    untraced = filters.negate(
        filters.any_of(*(filters.service_name(name) for name in _UNTRACED_SERVICES))
    )
    _instrument_channels(provider, untraced)
    _server_interceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=provider, filter_=untraced
    )
    log.info("tracing: spans of %s go to %s over OTLP", name, endpoint)
    return Tracing(provider, endpoint)


def _instrument_channels(provider: Any, filter_: Any) -> None:
    """Makes every grpc.aio channel this process opens carry the trace context.

    Like the instrumentation's GrpcAioInstrumentorClient, with two differences: a
    stream's span ends when its call ends, also when the caller stops reading after
    the message it wanted and cancels the call (the scheduler does, after a worker's
    result), instead of whenever the abandoned iterator is collected; and a stream of
    requests (ExecuteStep) names the run, step and attempt its messages are about.
    """
    from opentelemetry.instrumentation.grpc import _aio_client, aio_client_interceptors

    async def ending_with_call(interceptor: Any, span: Span, call: Any) -> AsyncIterator[Any]:
        ended = False

        def end(_: object = None) -> None:
            nonlocal ended
            if not ended:
                ended = True
                span.end()

        call.add_done_callback(end)
        try:
            async for response in call:
                yield response
        except Exception as exc:
            interceptor.add_error_details_to_span(span, exc)
            raise
        finally:
            end()

    class PromptStreamInterceptor(_aio_client.UnaryStreamAioClientInterceptor):
        def _wrap_stream_response(self, span: Span, call: Any) -> AsyncIterator[Any]:
            return ending_with_call(self, span, call)

    class BidiStreamInterceptor(_aio_client.StreamStreamAioClientInterceptor):
        """Also ends the span with the call, and names the run, step and attempt of
        the messages the caller writes (the instrumentation has no request hook for
        streams of requests)."""

        async def intercept_stream_stream(
            self, continuation: Any, client_call_details: Any, request_iterator: Any
        ) -> Any:
            if self.tracing_skipped(client_call_details):  # type: ignore[no-untyped-call]
                return await continuation(client_call_details, request_iterator)
            with self._start_interceptor_span(client_call_details.method) as span:  # type: ignore[no-untyped-call]
                details = self.propagate_trace_in_details(client_call_details)

                async def annotated() -> AsyncIterator[Any]:
                    async for request in request_iterator:
                        annotate(span, request)
                        yield request

                call = await continuation(details, annotated())
                return ending_with_call(self, span, call)

    def interceptors() -> list[Any]:
        chosen: list[Any] = aio_client_interceptors(  # type: ignore[no-untyped-call]
            tracer_provider=provider, filter_=filter_, request_hook=_client_request_hook
        )
        tracer = trace.get_tracer("maestro.grpc", tracer_provider=provider)
        stream = PromptStreamInterceptor(  # type: ignore[no-untyped-call]
            tracer, filter_=filter_, request_hook=_client_request_hook
        )
        bidi = BidiStreamInterceptor(tracer, filter_=filter_)  # type: ignore[no-untyped-call]
        return [
            stream
            if isinstance(i, _aio_client.UnaryStreamAioClientInterceptor)
            else bidi
            if isinstance(i, _aio_client.StreamStreamAioClientInterceptor)
            else i
            for i in chosen
        ]

    original_insecure, original_secure = grpc.aio.insecure_channel, grpc.aio.secure_channel

    def insecure(*args: Any, **kwargs: Any) -> Any:
        kwargs["interceptors"] = [*interceptors(), *(kwargs.get("interceptors") or ())]
        return original_insecure(*args, **kwargs)

    def secure(*args: Any, **kwargs: Any) -> Any:
        kwargs["interceptors"] = [*interceptors(), *(kwargs.get("interceptors") or ())]
        return original_secure(*args, **kwargs)

    grpc.aio.insecure_channel = insecure
    grpc.aio.secure_channel = secure


def server_interceptors() -> list[Any]:
    """The tracing interceptor for a server (outermost), or nothing when tracing is off."""
    return [] if _server_interceptor is None else [_server_interceptor]


def _client_request_hook(span: Span, request: Any) -> None:
    annotate(span, request)


def run_attributes(message: Any) -> dict[str, str | int]:
    """The run, step and attempt a request or response is about, as span attributes.

    Reads the fields Maestro's APIs use for them: a `StepAttempt` in `attempt`, or a
    resource name (`runs/{run}`, `runs/{run}/steps/{step}`) in `name` or `parent`, or
    a `run_id`/`step_id` pair, or any of these in `start` (the message that opens a
    stream of requests). Anything else gives nothing.
    """
    attributes: dict[str, str | int] = {}
    fields = getattr(message, "DESCRIPTOR", None)
    if fields is None:
        return attributes
    names = {f.name for f in fields.fields}
    if "start" in names and message.HasField("start"):
        return run_attributes(message.start)
    if "attempt" in names:
        attempt = message.attempt
        if hasattr(attempt, "run_id"):
            attributes[RUN_ID] = attempt.run_id
            attributes[STEP_ID] = attempt.step_id
            attributes[ATTEMPT] = int(attempt.attempt)
    for field in ("name", "parent"):
        if field in names:
            value = getattr(message, field)
            if isinstance(value, str) and value.startswith(_RUN_PREFIX):
                parts = value.split("/")
                attributes.setdefault(RUN_ID, parts[1])
                if len(parts) >= 4 and parts[2] == "steps":
                    attributes.setdefault(STEP_ID, parts[3])
    for field, key in (("run_id", RUN_ID), ("step_id", STEP_ID)):
        if field in names:
            value = getattr(message, field)
            if isinstance(value, str) and value:
                attributes.setdefault(key, value)
    return {k: v for k, v in attributes.items() if v != ""}


def annotate(span: Span, message: Any) -> None:
    """Puts a message's run, step and attempt on a span (nothing if not recording)."""
    if span.is_recording():
        attributes = run_attributes(message)
        if attributes:
            span.set_attributes(attributes)


def annotate_current_span(message: Any) -> None:
    """`annotate` on the current span (the server span of the call being handled)."""
    annotate(trace.get_current_span(), message)


@functools.cache
def _maestro_tracer() -> trace.Tracer:
    # Looked up once: get_tracer walks the provider on every call (a few % of a worker's
    # CPU per step). Taken before tracing is set up, it is a proxy that follows the
    # provider set later.
    return trace.get_tracer("maestro")


@contextmanager
def span(name: str, attributes: Mapping[str, str | int | float] | None = None) -> Iterator[Span]:
    """A child span of the current one; a no-op span when tracing is off."""
    if not _tracing_on:
        # OpenTelemetry's no-op path still builds and enters a context per span: about
        # 7 us, where a worker converts and runs a step that ends at once in 100 us.
        yield trace.INVALID_SPAN
        return
    tracer = _maestro_tracer()
    with tracer.start_as_current_span(name, attributes=dict(attributes or {})) as current:
        yield current


def trace_carrier() -> dict[str, str]:
    """The current trace context as W3C headers, for a message that carries a call's
    work inside a long stream (an attempt on a Dispatch stream); empty when tracing is
    off."""
    if not _tracing_on:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def join_trace(carrier: Mapping[str, str]) -> None:
    """Makes the context a `trace_carrier` sent current in this task: the spans it
    makes join the sender's trace. Call it first in a task of its own (the context is
    the task's, and ends with it)."""
    if not _tracing_on or not carrier:
        return
    from opentelemetry import context, propagate

    context.attach(propagate.extract(dict(carrier)))

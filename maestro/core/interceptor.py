"""The one server interceptor: every call of every service passes through it.

In order, for each call: a request id for the logs; the caller's identity (bearer
token; health and reflection are public); the caller's rate and stream limits; a
request that could not be decoded becomes INVALID_ARGUMENT; then the handler, whose
MaestroErrors become status codes with `google.rpc.Status` details and anything else
a generic INTERNAL (the traceback goes to the log). This is the only place on the
server side where exceptions become status codes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import grpc

from maestro.core.auth import PUBLIC_SERVICES, Authenticator, Identity, current_identity
from maestro.core.errors import Internal, InvalidArgument, MaestroError
from maestro.core.limits import ClientLimits
from maestro.core.log_setup import request_id_var
from maestro.core.status import DETAILS_METADATA_KEY, status_for
from maestro.core.wrapped_handlers import WrappedHandlers
from maestro.text import escape_unprintable

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
_MAX_REQUEST_ID_CHARS = 64
# Health checks must keep answering whatever a client does.
_UNLIMITED_SERVICES = frozenset({"grpc.health.v1.Health"})


async def abort_for(err: BaseException, context: Context) -> None:
    """Ends the call with the status (and details) for `err`; never returns."""
    if isinstance(err, MaestroError):
        status = status_for(err)
    else:
        log.error("unexpected error while serving a request", exc_info=err)
        status = status_for(
            Internal("internal error"),
            message=f"internal error (request id {request_id_var.get()})",
        )
    await context.abort(
        grpc.StatusCode[err.code.value if isinstance(err, MaestroError) else "INTERNAL"],
        status.message,
        trailing_metadata=((DETAILS_METADATA_KEY, status.SerializeToString()),),
    )


class _Undecodable:
    """Stands in for a request whose bytes did not parse, so the handler can refuse it."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    type_name = getattr(descriptor, "full_name", "request")

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, or whatever a hostile message makes a parser raise
            return _Undecodable(type_name)

    return parse


def _decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise InvalidArgument(
            "request",
            f"is not a valid {request.type_name} message (truncated, a wrong wire type, "
            "or a string that is not UTF-8)",
            error_reason="REQUEST_UNDECODABLE",
        )
    return request


async def _decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _decoded(request)


def _bind_request_id(context: Context) -> None:
    incoming = dict(context.invocation_metadata() or ())
    request_id = incoming.get("x-request-id")
    if isinstance(request_id, str) and request_id:
        # It goes into every log line: short and inert.
        request_id = escape_unprintable(request_id[:_MAX_REQUEST_ID_CHARS])
    else:
        request_id = os.urandom(8).hex()  # as unique as uuid4's first 16 digits, cheaper
    request_id_var.set(request_id)


def _peer_key(context: Context) -> str:
    peer = context.peer() or "unknown"
    # "ipv4:127.0.0.1:54321" -> "ipv4:127.0.0.1": one client, whatever its port.
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


class ServingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authentication, limits, decoding and error mapping for every call."""

    def __init__(
        self, authenticator: Authenticator | None = None, limits: ClientLimits | None = None
    ) -> None:
        """Args: authenticator: None lets every caller in (tests of bare servers);
        limits: per-client rate and stream limits, or None for none."""
        self._authenticator = authenticator
        self._limits = limits
        self._handlers = WrappedHandlers(self._wrap)

    def _enter(
        self, service: str, context: Context, *, streaming: bool
    ) -> AbstractContextManager[Any]:
        """Runs the checks every call must pass; returns what to hold while it runs."""
        _bind_request_id(context)
        identity = None
        if self._authenticator is not None and service not in PUBLIC_SERVICES:
            metadata: Any = context.invocation_metadata()
            identity = self._authenticator.authenticate(metadata)
        current_identity.set(identity)
        if self._limits is None or service in _UNLIMITED_SERVICES:
            return nullcontext()
        key = _client_key(identity, context)
        self._limits.admit(key)
        return self._limits.stream(key) if streaming else nullcontext()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if isinstance(method, bytes):
            method = method.decode("utf-8", "replace")
        return self._handlers.get(method, handler)

    def _wrap(self, method: str, handler: Any) -> Any:
        service = method.strip("/").split("/", 1)[0]
        decode = _tolerant(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(service, handler.unary_unary, streaming=False),
                request_deserializer=decode,
                response_serializer=serialize,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(service, handler.stream_unary, streaming=True, stream_in=True),
                request_deserializer=decode,
                response_serializer=serialize,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(service, handler.unary_stream, stream_in=False),
                request_deserializer=decode,
                response_serializer=serialize,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(service, handler.stream_stream, stream_in=True),
            request_deserializer=decode,
            response_serializer=serialize,
        )

    def _unary(self, service: str, inner: Any, *, streaming: bool, stream_in: bool = False) -> Any:
        async def unary(request: Any, context: Context) -> Any:
            try:
                with self._enter(service, context, streaming=streaming):
                    request = _decoded_stream(request) if stream_in else _decoded(request)
                    return await inner(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as err:
                await abort_for(err, context)

        return unary

    def _stream(self, service: str, inner: Any, *, stream_in: bool) -> Any:
        """Wraps a streaming handler, keeping its style.

        grpc.aio takes two styles of streaming handler: an async generator that yields
        responses, or a coroutine that writes them with `context.write` (the health
        service's Watch is one). Each must be wrapped in its own style.
        """
        if inspect.isasyncgenfunction(inner):

            async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
                try:
                    with self._enter(service, context, streaming=True):
                        request = _decoded_stream(request) if stream_in else _decoded(request)
                        async for response in inner(request, context):
                            yield response
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as err:
                    await abort_for(err, context)

            return generator

        async def writer(request: Any, context: Context) -> None:
            try:
                with self._enter(service, context, streaming=True):
                    request = _decoded_stream(request) if stream_in else _decoded(request)
                    await inner(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as err:
                await abort_for(err, context)

        return writer


def _client_key(identity: Identity | None, context: Context) -> str:
    return f"identity {identity.name}" if identity is not None else _peer_key(context)

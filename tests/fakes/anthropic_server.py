"""A local fake of the Anthropic Messages API, reached through the real SDK via base_url.

It speaks the documented wire format: `POST /v1/messages` answers a Message as JSON
(or as server-sent events when the request sets `"stream": true`), and errors are
`{"type": "error", "error": {"type": ..., "message": ...}}` with a `request-id`
header (and `retry-after` when given). Like the real API it refuses requests without
credentials (401) or without `anthropic-version` (400).

Tests script it: each request consumes the next scripted behaviour; when the script
is empty the default answers (a tool call of the requested tool with a summary and one
file under notes/). Standard library only: a ThreadingHTTPServer on 127.0.0.1, port 0,
in a daemon thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

log = logging.getLogger(__name__)

MESSAGES_PATH = "/v1/messages"
DEFAULT_TOOL = "submit_step_result"


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any
    """The parsed JSON body, or None when it was not JSON."""

    @property
    def api_key(self) -> str | None:
        """The credential sent, from x-api-key or an `Authorization: Bearer` header."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None


@dataclass(frozen=True)
class ToolResult:
    """Answer with a tool call whose input is {summary, files: [{path, content}]}."""

    summary: str
    files: dict[str, str] = field(default_factory=dict)
    input_tokens: int = 25
    output_tokens: int = 50


@dataclass(frozen=True)
class ApiError:
    """Answer with an API error."""

    status: int
    error_type: str
    message: str
    retry_after: int | None = None


@dataclass(frozen=True)
class MaxTokensStop:
    """Answer with a tool call cut off by max_tokens (stop_reason "max_tokens")."""


@dataclass(frozen=True)
class TextReply:
    """Answer with text only, no tool call (stop_reason "end_turn")."""

    text: str


@dataclass(frozen=True)
class Stall:
    """Hold the request open this long (or until stop()), then answer with the default."""

    seconds: float


@dataclass(frozen=True)
class EchoNote:
    """The built-in default: a tool call with a summary and notes/<digest>.md."""


Behaviour = ToolResult | ApiError | MaxTokensStop | TextReply | Stall | EchoNote


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeAnthropic


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections end after this, so handler threads never pile up.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake anthropic: " + format, *args)

    def do_POST(self) -> None:
        cast(_Server, self.server).fake._handle(self)

    do_GET = do_POST
    do_PUT = do_POST
    do_DELETE = do_POST


class FakeAnthropic:
    """The fake API server. Use as `with FakeAnthropic() as fake:` or start()/stop()."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._script: deque[Behaviour] = deque()
        self._default: Behaviour = EchoNote()
        self._default_delay = 0.0
        self._delays_when: list[tuple[str, float]] = []
        self._stream_pacing = 0.0
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> FakeAnthropic:
        """Starts serving on 127.0.0.1 on a free port; returns self."""
        if self._server is not None:
            raise RuntimeError("FakeAnthropic is already started")
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-anthropic",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving; stalled requests are released at once, unanswered."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The URL to pass as the SDK's base_url."""
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # Script

    def push(self, behaviour: Behaviour) -> None:
        """Adds a behaviour for the next unscripted request."""
        with self._lock:
            self._script.append(behaviour)

    def push_tool_result(
        self,
        summary: str,
        files: dict[str, str],
        *,
        input_tokens: int = 25,
        output_tokens: int = 50,
    ) -> None:
        """The next request gets a tool call with this summary and these files."""
        self.push(ToolResult(summary, dict(files), input_tokens, output_tokens))

    def push_error(
        self, status: int, error_type: str, message: str, *, retry_after: int | None = None
    ) -> None:
        """The next request gets this API error (e.g. 529, "overloaded_error", ...)."""
        self.push(ApiError(status, error_type, message, retry_after))

    def push_stop_reason_max_tokens(self) -> None:
        """The next request gets an answer cut off by max_tokens."""
        self.push(MaxTokensStop())

    def push_text_reply(self, text: str) -> None:
        """The next request gets a text answer without any tool call."""
        self.push(TextReply(text))

    def push_stall(self, seconds: float) -> None:
        """The next request is held this long (or until stop()), then gets the default."""
        self.push(Stall(seconds))

    def set_default(self, behaviour: Behaviour) -> None:
        """Chooses the answer for requests when the script is empty."""
        with self._lock:
            self._default = behaviour

    def set_default_delay(self, seconds: float) -> None:
        """Every request waits this long (or until stop()) before it is answered."""
        with self._lock:
            self._default_delay = seconds

    def set_stream_pacing(self, seconds: float) -> None:
        """Streamed answers wait this long between events, like a model writing."""
        with self._lock:
            self._stream_pacing = seconds

    def delay_when(self, text: str, seconds: float) -> None:
        """Requests whose system prompt contains `text` wait this long before answering.

        Personas' system prompts name their role, so this slows one persona's steps
        (for example "frontend developer") and no others.
        """
        with self._lock:
            self._delays_when.append((text, seconds))

    # Observation

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        """Scripted behaviours not yet consumed."""
        with self._lock:
            return len(self._script)

    @property
    def in_flight(self) -> int:
        """Requests received and not yet answered."""
        with self._lock:
            return self._in_flight

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Blocks until `count` requests have arrived; False on timeout (threads only)."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._requests) >= count, timeout)

    async def wait_for_requests_async(self, count: int, within: float = 5.0) -> bool:
        """Like wait_for_requests, without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_requests, count, within)

    # Serving (handler threads)

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        headers = {k.lower(): v for k, v in handler.headers.items()}
        path = handler.path.split("?", 1)[0]
        recorded = RecordedRequest(handler.command, path, headers, body)
        with self._lock:
            self._requests.append(recorded)
            self._in_flight += 1
            number = next(self._ids)
            self._lock.notify_all()
        try:
            self._answer(handler, recorded, number)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout, or a cancelled call); nothing to answer.
            log.debug("fake anthropic: client of request %s went away", number)
            handler.close_connection = True
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, handler: _Handler, request: RecordedRequest, number: int) -> None:
        rejection = _validate(request)
        if rejection is not None:
            _send_error(handler, rejection, number)
            return
        system = json.dumps(request.body.get("system", ""))
        with self._lock:
            behaviour = self._script.popleft() if self._script else self._default
            delay, default = self._default_delay, self._default
            delay += sum(seconds for text, seconds in self._delays_when if text in system)
        if delay and self._stopping.wait(delay):
            handler.close_connection = True
            return
        if isinstance(behaviour, Stall):
            if self._stopping.wait(behaviour.seconds):
                handler.close_connection = True
                return
            behaviour = default if not isinstance(default, Stall) else EchoNote()
        if isinstance(behaviour, ApiError):
            _send_error(handler, behaviour, number)
            return
        message = _message(request.body, behaviour, number)
        if request.body.get("stream") is True:
            with self._lock:
                pacing = self._stream_pacing
            _send_events(handler, message, number, pacing, self._stopping)
        else:
            _send_json(handler, 200, message, number)


def _validate(request: RecordedRequest) -> ApiError | None:
    """The checks the real API makes before it looks at the request."""
    if request.path != MESSAGES_PATH:
        return ApiError(404, "not_found_error", f"Not found: {request.path}")
    if request.method != "POST":
        return ApiError(405, "invalid_request_error", f"Method {request.method} not allowed")
    if not request.api_key:
        return ApiError(401, "authentication_error", "x-api-key header is required")
    if "anthropic-version" not in request.headers:
        return ApiError(400, "invalid_request_error", "anthropic-version: header is required")
    if not isinstance(request.body, dict):
        return ApiError(400, "invalid_request_error", "The request body is not valid JSON.")
    for name in ("model", "max_tokens", "messages"):
        if name not in request.body:
            return ApiError(400, "invalid_request_error", f"{name}: Field required")
    return None


def _requested_tool(body: dict[str, Any]) -> str | None:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool" and choice.get("name"):
        return str(choice["name"])
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("name"):
            return str(tool["name"])
    return None


def _message(body: dict[str, Any], behaviour: Behaviour, number: int) -> dict[str, Any]:
    tool = _requested_tool(body) or DEFAULT_TOOL
    input_tokens = max(1, len(json.dumps(body)) // 4)
    stop_reason = "tool_use"
    if isinstance(behaviour, TextReply):
        return _envelope(
            body,
            number,
            [{"type": "text", "text": behaviour.text}],
            "end_turn",
            {"input_tokens": input_tokens, "output_tokens": max(1, len(behaviour.text) // 4)},
        )
    if isinstance(behaviour, ToolResult):
        tool_input: dict[str, Any] = {
            "summary": behaviour.summary,
            "files": [{"path": p, "content": c} for p, c in behaviour.files.items()],
        }
        input_tokens, output_tokens = behaviour.input_tokens, behaviour.output_tokens
    elif isinstance(behaviour, MaxTokensStop):
        tool_input = {"summary": "The answer was cut"}
        output_tokens = int(body.get("max_tokens") or 1)
        stop_reason = "max_tokens"
    else:
        digest = hashlib.sha256(
            json.dumps(body.get("messages"), sort_keys=True).encode()
        ).hexdigest()[:12]
        tool_input = {
            "summary": f"Fake answer from {body['model']}.",
            "files": [
                {
                    "path": f"notes/{digest}.md",
                    "content": f"# Notes\n\nA fake answer to request {digest}.\n",
                }
            ],
        }
        output_tokens = max(1, len(json.dumps(tool_input)) // 4)
    block = {
        "type": "tool_use",
        "id": f"toolu_fake_{number:06d}",
        "name": tool,
        "input": tool_input,
    }
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    return _envelope(body, number, [block], stop_reason, usage)


def _envelope(
    body: dict[str, Any],
    number: int,
    content: list[dict[str, Any]],
    stop_reason: str,
    usage: dict[str, int],
) -> dict[str, Any]:
    return {
        "id": f"msg_fake_{number:06d}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _send_json(handler: _Handler, status: int, payload: Any, number: int) -> None:
    data = json.dumps(payload).encode("utf-8")
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("request-id", f"req_fake_{number:06d}")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _send_error(handler: _Handler, error: ApiError, number: int) -> None:
    payload = {
        "type": "error",
        "error": {"type": error.error_type, "message": error.message},
        "request_id": f"req_fake_{number:06d}",
    }
    data = json.dumps(payload).encode("utf-8")
    handler.send_response(error.status)
    handler.send_header("content-type", "application/json")
    handler.send_header("request-id", f"req_fake_{number:06d}")
    if error.retry_after is not None:
        handler.send_header("retry-after", str(error.retry_after))
    # Tell the SDK what the API would: whether retrying is worthwhile.
    handler.send_header(
        "x-should-retry",
        "true" if error.status in (408, 409, 429) or error.status >= 500 else "false",
    )
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def message_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Turns a Message into the documented stream of server-sent events."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opening = {**block, "input": {}}
            text = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": text[i : i + 64]}
                for i in range(0, len(text), 64)
            ]
        else:
            opening = {**block, "text": ""}
            deltas = [{"type": "text_delta", "text": block["text"]}]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _send_events(
    handler: _Handler,
    message: dict[str, Any],
    number: int,
    pacing: float = 0.0,
    stopping: threading.Event | None = None,
) -> None:
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.send_header("cache-control", "no-cache")
    handler.send_header("request-id", f"req_fake_{number:06d}")
    # No length is known up front: the end of the stream is the end of the connection.
    handler.send_header("connection", "close")
    handler.end_headers()
    handler.close_connection = True
    for event, data in message_events(message):
        if pacing and stopping is not None and stopping.wait(pacing):
            return
        handler.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        handler.wfile.flush()

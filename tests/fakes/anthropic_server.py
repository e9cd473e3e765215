"""A local fake of the Anthropic Messages API, reached through the real SDK via base_url.

It speaks the documented wire format: `POST /v1/messages` answers a Message as JSON
(or as server-sent events when the request sets `"stream": true`), and errors are
`{"type": "error", "error": {"type": ..., "message": ...}}` with a `request-id`
header (and `retry-after` when given). Like the real API it refuses requests without
credentials (401) or without `anthropic-version` (400), and like the current models
(Claude Sonnet 5.5, Opus 5.5, Fable 5.1) it answers HTTP 400 to what they refuse:
forced tool choice (`tool_choice` of type `tool` or `any`), sampling parameters
(`temperature`, `top_p`, `top_k`), an assistant prefill (a last message from the
assistant), thinking budgets (`thinking.type: enabled`, `budget_tokens`) and
`thinking: {type: disabled}`. It also checks what the API checks about a
conversation: every `tool_use` is answered by a `tool_result` in the next message
and nothing else is; thinking blocks come back exactly as they were sent; at most 4
`cache_control` breakpoints; a structured-output schema closes every object.

Prompt caching is modelled on the documented rules: the prompt is the prefix tools ->
system -> messages; each `cache_control` breakpoint writes the prefix up to it (when
it is at least `min_cacheable_tokens` long), and a later request reads the longest
written prefix found at or up to 20 blocks before one of its breakpoints. Usage
reports `input_tokens` (after the last breakpoint), `cache_creation_input_tokens` and
`cache_read_input_tokens`; tokens are counted as 1 per 4 characters of JSON.

Like the API it can hold the organisation to a rate limit (`set_rate_limit`: requests
per window, sliding, with `anthropic-ratelimit-requests-*` headers on every answer and
429 with `retry-after` beyond it) and be overloaded for a while (`set_overloaded`:
every request answered 529); `max_in_window` says how many requests any window saw.

Tests script it: each request consumes the next scripted behaviour. When the script is
empty the default, `Auto`, plays a plausible model: a structured-output request gets
a JSON instance of its schema; a request with the file tools of Maestro's agent loop
gets one `write_file` call per path listed under a "Deliverables" heading of the
first user message (until the conversation has a write_file call), then a `submit`;
any other request with tools gets a call of its first tool with a summary and one
notes/ file (the legacy shape); a request without tools gets text. Standard library
only: a ThreadingHTTPServer on 127.0.0.1, port 0, in a daemon thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

log = logging.getLogger(__name__)

MESSAGES_PATH = "/v1/messages"
DEFAULT_TOOL = "submit_step_result"
MAX_BREAKPOINTS = 4
CACHE_LOOKBACK_BLOCKS = 20
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")


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

    def breakpoints(self) -> int:
        """How many cache_control breakpoints the request carries."""
        body = self.body if isinstance(self.body, dict) else {}
        return sum(1 for block in _prompt_blocks(body) if block.breakpoint)


# Behaviours: what the next request gets.


@dataclass(frozen=True)
class ToolResult:
    """Answer with a call of the request's first tool, input {summary, files}."""

    summary: str
    files: dict[str, str] = field(default_factory=dict)
    input_tokens: int = 25
    output_tokens: int = 50


@dataclass(frozen=True)
class ToolCall:
    """One tool_use block: a tool name and its input."""

    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ToolCalls:
    """Answer with these tool calls (stop_reason "tool_use"), after optional text."""

    calls: tuple[ToolCall, ...]
    text: str = ""
    output_tokens: int | None = None


@dataclass(frozen=True)
class JsonAnswer:
    """Answer a structured-output request with this JSON value as its text."""

    value: Any
    output_tokens: int | None = None


@dataclass(frozen=True)
class ApiError:
    """Answer with an API error."""

    status: int
    error_type: str
    message: str
    retry_after: int | None = None
    error_code: str | None = None
    """Sent as error.details.error_code (e.g. "enforced_spend_limit_reached")."""


@dataclass(frozen=True)
class MaxTokensStop:
    """Answer cut off by max_tokens (stop_reason "max_tokens").

    With `tool` set, the answer ends inside a call of that tool whose input is cut
    (`partial` is the part written); otherwise it ends inside text (`text`).
    """

    tool: str | None = None
    partial: dict[str, Any] = field(default_factory=dict)
    text: str = '{"summary": "The answer was cu'


@dataclass(frozen=True)
class TextReply:
    """Answer with text only, no tool call (stop_reason "end_turn")."""

    text: str


@dataclass(frozen=True)
class Stall:
    """Hold the request open this long (or until stop()), then answer with the default."""

    seconds: float


@dataclass(frozen=True)
class StreamError:
    """Start a 200 event stream, then send an `error` event after `after_events` events
    (the API's way to report, for example, `overloaded_error` mid-stream)."""

    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    after_events: int = 2


@dataclass(frozen=True)
class StreamStall:
    """Start a 200 event stream, then go silent after `after_events` events for this
    long (or until stop())."""

    seconds: float
    after_events: int = 2


@dataclass(frozen=True)
class EchoNote:
    """A tool call with a summary and notes/<digest>.md (the legacy default)."""


@dataclass(frozen=True)
class Auto:
    """The default: a plausible answer for the kind of request (see the module doc)."""


Behaviour = (
    ToolResult
    | ToolCalls
    | JsonAnswer
    | ApiError
    | MaxTokensStop
    | TextReply
    | Stall
    | StreamError
    | StreamStall
    | EchoNote
    | Auto
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Like the API, take many connections at once: with socketserver's backlog of 5,
    # twenty steps calling together saw connections broken (ReadError).
    request_queue_size = 128
    fake: FakeAnthropic


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections end after this, so handler threads never pile up.
    timeout = 30
    extra_headers: dict[str, str] = {}  # noqa: RUF012 (set per request, never mutated)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake anthropic: " + format, *args)

    def do_POST(self) -> None:
        cast(_Server, self.server).fake._handle(self)

    do_GET = do_POST
    do_PUT = do_POST
    do_DELETE = do_POST


@dataclass(frozen=True)
class _Plan:
    """How to send an answer: the message, and what goes wrong in its stream."""

    message: dict[str, Any]
    stream_error: StreamError | None = None
    stream_stall: StreamStall | None = None


class FakeAnthropic:
    """The fake API server. Use as `with FakeAnthropic() as fake:` or start()/stop().

    Args:
        min_cacheable_tokens: The shortest prefix the prompt cache stores.
        caching: False ignores every cache_control breakpoint (all input billed as
            input), to measure what a prompt costs without the cache.
    """

    def __init__(self, *, min_cacheable_tokens: int = 1024, caching: bool = True) -> None:
        self._lock = threading.Condition()
        self._script: deque[Behaviour] = deque()
        self._default: Behaviour = Auto()
        self._default_delay = 0.0
        self._delays_when: list[tuple[str, float]] = []
        self._scripts_when: list[tuple[str, deque[Behaviour]]] = []
        self._stream_pacing = 0.0
        self._requests: list[RecordedRequest] = []
        self._answers: list[dict[str, Any]] = []
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._cache: set[str] = set()
        self._signatures: set[str] = set()
        self.min_cacheable_tokens = min_cacheable_tokens
        self.caching = caching
        # Rate limits (set_rate_limit) and overload (set_overloaded).
        self._rpm: int | None = None
        self._rpm_window = 60.0
        self._arrivals: list[float] = []
        self._rate_limited = 0
        self._overloaded = False
        self._overload_answers = 0

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
        """The next request gets a call of its first tool with this summary and files."""
        self.push(ToolResult(summary, dict(files), input_tokens, output_tokens))

    def push_tool_calls(self, *calls: tuple[str, dict[str, Any]], text: str = "") -> None:
        """The next request gets these tool calls, e.g. ("write_file", {...})."""
        self.push(ToolCalls(tuple(ToolCall(name, dict(args)) for name, args in calls), text))

    def push_json(self, value: Any) -> None:
        """The next (structured-output) request gets this JSON value as its answer."""
        self.push(JsonAnswer(value))

    def push_error(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        retry_after: int | None = None,
        error_code: str | None = None,
    ) -> None:
        """The next request gets this API error (e.g. 529, "overloaded_error", ...)."""
        self.push(ApiError(status, error_type, message, retry_after, error_code))

    def push_stop_reason_max_tokens(
        self, tool: str | None = None, partial: dict[str, Any] | None = None
    ) -> None:
        """The next request gets an answer cut off by max_tokens (inside `tool`'s call
        when given, else inside text)."""
        self.push(MaxTokensStop(tool, dict(partial or {})))

    def push_text_reply(self, text: str) -> None:
        """The next request gets a text answer without any tool call."""
        self.push(TextReply(text))

    def push_stall(self, seconds: float) -> None:
        """The next request is held this long (or until stop()), then gets the default."""
        self.push(Stall(seconds))

    def push_stream_error(
        self, error_type: str = "overloaded_error", message: str = "Overloaded", after: int = 2
    ) -> None:
        """The next request's stream breaks off with an `error` event after `after` events."""
        self.push(StreamError(error_type, message, after))

    def push_stream_stall(self, seconds: float, after: int = 2) -> None:
        """The next request's stream goes silent after `after` events."""
        self.push(StreamStall(seconds, after))

    def push_when(self, text: str, behaviour: Behaviour) -> None:
        """Adds a behaviour for the next request whose prompt contains `text`.

        Requests matching such a script take from it before the common script, so
        steps running at the same time (backend and frontend, say) can be scripted
        apart: Maestro's prompts name the persona ("You are the backend developer").
        """
        with self._lock:
            for known, queue in self._scripts_when:
                if known == text:
                    queue.append(behaviour)
                    return
            self._scripts_when.append((text, deque([behaviour])))

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
        """Requests whose prompt (system or messages) contains `text` wait this long.

        Maestro's prompts name the persona's role ("You are the frontend developer"),
        so this slows one persona's steps and no others.
        """
        with self._lock:
            self._delays_when.append((text, seconds))

    def set_rate_limit(self, rpm: int | None, window: float = 60.0) -> None:
        """Enforces `rpm` requests per `window` seconds (sliding, by arrival) like the
        API's limit: every answer carries `anthropic-ratelimit-requests-*` headers, and a
        request over the limit gets 429 with `retry-after`. None lifts the limit."""
        with self._lock:
            self._rpm = rpm
            self._rpm_window = window

    def set_overloaded(self, overloaded: bool) -> None:
        """While True every request is answered 529 overloaded_error."""
        with self._lock:
            self._overloaded = overloaded

    @property
    def rate_limited(self) -> int:
        """Requests answered 429 by the rate limit (set_rate_limit)."""
        with self._lock:
            return self._rate_limited

    @property
    def overload_answers(self) -> int:
        """Requests answered 529 while overloaded (set_overloaded)."""
        with self._lock:
            return self._overload_answers

    def arrival_times(self) -> list[float]:
        """When each Messages request arrived (time.monotonic()), in order."""
        with self._lock:
            return list(self._arrivals)

    def max_in_window(self, window: float) -> int:
        """The most Messages requests that arrived within any `window` seconds."""
        times = self.arrival_times()
        most, first = 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= window:
                first += 1
            most = max(most, last - first + 1)
        return most

    def clear_cache(self) -> None:
        """Forgets every cached prompt prefix."""
        with self._lock:
            self._cache.clear()

    # Observation

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def answers(self) -> list[dict[str, Any]]:
        """Every message answered so far (with its usage), in order (a copy)."""
        with self._lock:
            return list(self._answers)

    @property
    def pending(self) -> int:
        """Scripted behaviours not yet consumed."""
        with self._lock:
            return len(self._script) + sum(len(q) for _, q in self._scripts_when)

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
            limited, handler.extra_headers = self._rate_check(path)
            overloaded = self._overloaded and path == MESSAGES_PATH and limited is None
            if overloaded:
                self._overload_answers += 1
            self._lock.notify_all()
        try:
            if limited is not None:
                _send_error(handler, limited, number)
            elif overloaded:
                _send_error(handler, ApiError(529, "overloaded_error", "Overloaded"), number)
            else:
                self._answer(handler, recorded, number)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout, or a cancelled call); nothing to answer.
            log.debug("fake anthropic: client of request %s went away", number)
            handler.close_connection = True
        finally:
            with self._lock:
                self._in_flight -= 1

    def _rate_check(self, path: str) -> tuple[ApiError | None, dict[str, str]]:
        """(a 429 for a request over the limit, or None; the rate-limit headers).
        Called with the lock held."""
        if path != MESSAGES_PATH:
            return None, {}
        now = time.monotonic()
        self._arrivals.append(now)
        if self._rpm is None:
            return None, {}
        window = self._rpm_window
        recent = [t for t in self._arrivals[:-1] if now - t < window]
        oldest = recent[0] if recent else now
        reset = datetime.now(UTC) + timedelta(seconds=oldest + window - now)
        over = len(recent) >= self._rpm
        remaining = max(0, self._rpm - len(recent) - (0 if over else 1))
        headers = {
            "anthropic-ratelimit-requests-limit": str(self._rpm),
            "anthropic-ratelimit-requests-remaining": str(remaining),
            "anthropic-ratelimit-requests-reset": reset.isoformat().replace("+00:00", "Z"),
        }
        if not over:
            return None, headers
        self._rate_limited += 1
        self._arrivals.pop()  # refused: the API does not count it either
        wait = max(1, math.ceil(oldest + window - now))
        return (
            ApiError(
                429, "rate_limit_error", "Number of requests has exceeded your rate limit", wait
            ),
            headers,
        )

    def _answer(self, handler: _Handler, request: RecordedRequest, number: int) -> None:
        rejection = _validate(request)
        if rejection is None:
            with self._lock:
                rejection = _check_signatures(request.body, self._signatures)
        if rejection is not None:
            _send_error(handler, rejection, number)
            return
        prompt = json.dumps([request.body.get("system", ""), request.body.get("messages")])
        with self._lock:
            matching = [q for text, q in self._scripts_when if q and text in prompt]
            if matching:
                behaviour = matching[0].popleft()
            else:
                behaviour = self._script.popleft() if self._script else self._default
            delay, default = self._default_delay, self._default
            delay += sum(seconds for text, seconds in self._delays_when if text in prompt)
        if delay and self._stopping.wait(delay):
            handler.close_connection = True
            return
        if isinstance(behaviour, Stall):
            if self._stopping.wait(behaviour.seconds):
                handler.close_connection = True
                return
            behaviour = default if not isinstance(default, Stall) else Auto()
        if isinstance(behaviour, ApiError):
            _send_error(handler, behaviour, number)
            return
        plan = self._plan(request.body, behaviour, number)
        with self._lock:
            self._answers.append(plan.message)
            pacing = self._stream_pacing
        if request.body.get("stream") is True:
            _send_events(handler, plan, number, pacing, self._stopping)
        elif plan.stream_error is not None:
            error = plan.stream_error
            _send_error(handler, ApiError(529, error.error_type, error.message), number)
        else:
            _send_json(handler, 200, plan.message, number)

    def _plan(self, body: dict[str, Any], behaviour: Behaviour, number: int) -> _Plan:
        content, stop_reason, output_tokens = _content(body, behaviour, number)
        if _thinks(body) and stop_reason in ("tool_use", "end_turn", "max_tokens"):
            signature = f"sig_fake_{number:06d}"
            with self._lock:
                self._signatures.add(signature)
            content = [{"type": "thinking", "thinking": "", "signature": signature}, *content]
        usage = self._usage(body)
        usage["output_tokens"] = output_tokens or max(1, len(json.dumps(content)) // 4)
        message = {
            "id": f"msg_fake_{number:06d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        return _Plan(
            message,
            stream_error=behaviour if isinstance(behaviour, StreamError) else None,
            stream_stall=behaviour if isinstance(behaviour, StreamStall) else None,
        )

    def _usage(self, body: dict[str, Any]) -> dict[str, Any]:
        """Input tokens split into cache reads, cache writes and the rest."""
        blocks = _prompt_blocks(body)
        keys: list[str] = []
        sums: list[int] = []
        digest = hashlib.sha256(str(body["model"]).encode())
        total = 0
        for block in blocks:
            digest.update(block.key.encode())
            keys.append(digest.hexdigest())
            total += block.tokens
            sums.append(total)
        points = [i for i, block in enumerate(blocks) if block.breakpoint and self.caching]
        minimum = self.min_cacheable_tokens
        with self._lock:
            hit = -1
            for point in points:
                for j in range(point, max(-1, point - CACHE_LOOKBACK_BLOCKS), -1):
                    if keys[j] in self._cache:
                        hit = max(hit, j)
                        break
            last = max(points, default=-1)
            read = sums[hit] if hit >= 0 else 0
            write = sums[last] - read if last > hit and sums[last] >= minimum else 0
            for point in points:
                if sums[point] >= minimum:
                    self._cache.add(keys[point])
        return {
            "input_tokens": max(0, total - read - write),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        }


# The request's prompt as the cache sees it.


@dataclass(frozen=True)
class _Block:
    key: str
    tokens: int
    breakpoint: bool


def _prompt_blocks(body: dict[str, Any]) -> list[_Block]:
    """tools -> system -> messages, one entry per block, cache_control split off."""
    raw: list[tuple[str, Any]] = []
    for tool in body.get("tools") or []:
        raw.append(("tool", tool))
    system = body.get("system")
    if isinstance(system, str) and system:
        raw.append(("system", {"type": "text", "text": system}))
    elif isinstance(system, list):
        raw += [("system", block) for block in system]
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        role = str(message.get("role"))
        if isinstance(content, str):
            raw.append((role, {"type": "text", "text": content}))
        elif isinstance(content, list):
            raw += [(role, block) for block in content]
    blocks = []
    for where, item in raw:
        marked = isinstance(item, dict) and "cache_control" in item
        clean = {k: v for k, v in item.items() if k != "cache_control"} if marked else item
        text = json.dumps([where, clean], sort_keys=True)
        blocks.append(_Block(text, max(1, len(text) // 4), marked))
    if isinstance(body.get("cache_control"), dict) and blocks:
        last = blocks[-1]
        blocks[-1] = _Block(last.key, last.tokens, True)
    return blocks


# What the current models refuse, and what the API checks.


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


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
    body = request.body
    if not isinstance(body, dict):
        return _invalid("The request body is not valid JSON.")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return _invalid(f"{name}: Field required")
    return _current_model_rules(body) or _conversation_rules(body) or _feature_rules(body)


def _current_model_rules(body: dict[str, Any]) -> ApiError | None:
    model = body["model"]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("tool", "any"):
        return _invalid(
            f"tool_choice: forced tool use (type {choice['type']!r}) is not supported by "
            f"{model}; use 'auto' or 'none'"
        )
    for name in ("temperature", "top_p", "top_k"):
        if name in body:
            return _invalid(f"{name}: sampling parameters are not supported by {model}")
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        kind = thinking.get("type")
        if kind == "enabled" or "budget_tokens" in thinking:
            return _invalid(
                f"thinking: manual thinking budgets are not supported by {model}; use "
                "thinking.type 'adaptive' with output_config.effort"
            )
        if kind == "disabled":
            return _invalid(f"thinking: thinking cannot be disabled on {model}")
        if kind not in ("adaptive", "between_tools"):
            return _invalid(f"thinking.type: unknown value {kind!r}")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return _invalid("messages: at least one message is required")
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        return _invalid(
            f"messages: {model} does not support assistant message prefill; the "
            "conversation must end with a user message"
        )
    return None


def _blocks(message: Any) -> list[dict[str, Any]]:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _conversation_rules(body: dict[str, Any]) -> ApiError | None:
    messages: list[Any] = body["messages"]
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return _invalid(f"messages.{i}.role: expected 'user' or 'assistant'")
        uses = [b["id"] for b in _blocks(message) if b.get("type") == "tool_use"]
        following = messages[i + 1] if i + 1 < len(messages) else None
        answered = [
            b.get("tool_use_id") for b in _blocks(following) if b.get("type") == "tool_result"
        ]
        if message.get("role") == "assistant" and uses:
            missing = [u for u in uses if u not in answered]
            if missing:
                return _invalid(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have "
                    "a corresponding `tool_result` block in the next message."
                )
            kinds = [b.get("type") for b in _blocks(following)]
            first_other = next((k for k, t in enumerate(kinds) if t != "tool_result"), len(kinds))
            if "tool_result" in kinds[first_other:]:
                return _invalid(
                    f"messages.{i + 1}: `tool_result` blocks must come first in the content"
                )
        if message.get("role") == "user":
            previous = messages[i - 1] if i > 0 else None
            issued = {b.get("id") for b in _blocks(previous) if b.get("type") == "tool_use"}
            for j, block in enumerate(_blocks(message)):
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in issued:
                    return _invalid(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous "
                        "message."
                    )
    return None


def _feature_rules(body: dict[str, Any]) -> ApiError | None:
    found = sum(1 for block in _prompt_blocks(body) if block.breakpoint)
    if found > MAX_BREAKPOINTS:
        return _invalid(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {found}."
        )
    config = body.get("output_config")
    if config is None:
        return None
    if not isinstance(config, dict):
        return _invalid("output_config: expected an object")
    effort = config.get("effort")
    if effort is not None and effort not in EFFORT_LEVELS:
        return _invalid(f"output_config.effort: expected one of {', '.join(EFFORT_LEVELS)}")
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            return _invalid("output_config.format.type: expected 'json_schema'")
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            return _invalid("output_config.format.schema: expected an object")
        problem = _schema_problem(schema, "schema")
        if problem:
            return _invalid(f"output_config.format.{problem}")
    return None


def _schema_problem(node: Any, where: str) -> str | None:
    """Structured outputs need every object closed (additionalProperties: false)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and node.get("additionalProperties") is not False:
            return f"{where}: objects must set additionalProperties to false"
        for key, value in node.items():
            problem = _schema_problem(value, f"{where}.{key}")
            if problem:
                return problem
    elif isinstance(node, list):
        for index, value in enumerate(node):
            problem = _schema_problem(value, f"{where}[{index}]")
            if problem:
                return problem
    return None


def _check_signatures(body: Any, issued: set[str]) -> ApiError | None:
    """Thinking blocks must come back exactly as the model sent them."""
    for i, message in enumerate(body.get("messages") or []):
        for block in _blocks(message):
            if block.get("type") == "thinking" and block.get("signature") not in issued:
                return _invalid(
                    f"messages.{i}: invalid `signature` in `thinking` block; thinking blocks "
                    "must be passed back unmodified"
                )
    return None


def _thinks(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") == "adaptive"


# Answers.


def _digest(body: dict[str, Any]) -> str:
    first = (body.get("messages") or [None])[0]
    return hashlib.sha256(json.dumps(first, sort_keys=True).encode()).hexdigest()[:12]


def _tool_names(body: dict[str, Any]) -> list[str]:
    return [str(t["name"]) for t in body.get("tools") or [] if isinstance(t, dict) and "name" in t]


def _tool_use(number: int, index: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_fake_{number:06d}_{index}",
        "name": name,
        "input": args,
    }


def _content(
    body: dict[str, Any], behaviour: Behaviour, number: int
) -> tuple[list[dict[str, Any]], str, int | None]:
    """The answer's content blocks, stop reason and output tokens (None: estimated)."""
    if isinstance(behaviour, StreamError | StreamStall | Auto):
        behaviour = _auto(body, number)
    if isinstance(behaviour, TextReply):
        return [{"type": "text", "text": behaviour.text}], "end_turn", None
    if isinstance(behaviour, JsonAnswer):
        text = json.dumps(behaviour.value)
        return [{"type": "text", "text": text}], "end_turn", behaviour.output_tokens
    if isinstance(behaviour, ToolCalls):
        content: list[dict[str, Any]] = []
        if behaviour.text:
            content.append({"type": "text", "text": behaviour.text})
        content += [
            _tool_use(number, i, call.name, call.input) for i, call in enumerate(behaviour.calls)
        ]
        return content, "tool_use", behaviour.output_tokens
    if isinstance(behaviour, MaxTokensStop):
        budget = int(body.get("max_tokens") or 1)
        if behaviour.tool:
            block = _tool_use(number, 0, behaviour.tool, behaviour.partial)
            return [block], "max_tokens", budget
        return [{"type": "text", "text": behaviour.text}], "max_tokens", budget
    tools = _tool_names(body)
    tool = tools[0] if tools else DEFAULT_TOOL
    if isinstance(behaviour, ToolResult):
        args = {
            "summary": behaviour.summary,
            "files": [{"path": p, "content": c} for p, c in behaviour.files.items()],
        }
        return [_tool_use(number, 0, tool, args)], "tool_use", behaviour.output_tokens
    digest = _digest(body)
    args = {
        "summary": f"Fake answer from {body['model']}.",
        "files": [
            {"path": f"notes/{digest}.md", "content": f"# Notes\n\nA fake answer to {digest}.\n"}
        ],
    }
    return [_tool_use(number, 0, tool, args)], "tool_use", None


_DELIVERABLE = re.compile(r"^- `([^`]+)`")


def _deliverables(body: dict[str, Any]) -> list[str]:
    """Paths listed under a "Deliverables" heading of the first user message."""
    first = (body.get("messages") or [{}])[0]
    content = first.get("content") if isinstance(first, dict) else None
    texts: Iterable[str]
    if isinstance(content, str):
        texts = [content]
    else:
        texts = [b.get("text", "") for b in _blocks(first) if b.get("type") == "text"]
    paths: list[str] = []
    for text in texts:
        listing = False
        for line in text.splitlines():
            if line.lstrip("#").strip().lower().startswith("deliverables"):
                listing = True
                continue
            if listing and line.startswith("#"):
                listing = False
            match = _DELIVERABLE.match(line) if listing else None
            if match:
                paths.append(match.group(1))
    return paths


# A plausible model's project: it installs (valid TOML), its tests pass and it is lint
# clean, so the built-in workflows' gate passes on the default answers.
_FAKE_PYPROJECT = """\
[project]
name = "fake-{digest}"
version = "0.1.0"

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
"""


def _fake_file(path: str, digest: str) -> tuple[str, str]:
    if path.endswith("/"):
        name = (
            f"test_fake_{digest}.py" if path.rstrip("/").endswith("tests") else f"fake_{digest}.py"
        )
        path += name
    if path.rsplit("/", 1)[-1].startswith("test_") and path.endswith(".py"):
        text = f'"""Fake tests for request {digest}."""\n\n\ndef test_fake():\n    assert True\n'
        return path, text
    if path.endswith(".py"):
        return path, f'"""A fake module for request {digest}."""\n'
    if path.endswith(".md"):
        return path, f"# Fake\n\nA fake document for request {digest}.\n"
    if path.endswith("pyproject.toml"):
        return path, _FAKE_PYPROJECT.format(digest=digest)
    return path, f"fake {digest}\n"


def _auto(body: dict[str, Any], number: int) -> Behaviour:
    config = body.get("output_config")
    if isinstance(config, dict) and isinstance(config.get("format"), dict):
        schema = config["format"].get("schema") or {}
        return JsonAnswer(_instance(schema, schema.get("$defs", {}), "", _digest(body)))
    tools = _tool_names(body)
    if "write_file" in tools and "submit" in tools:
        wrote = any(
            b.get("type") == "tool_use" and b.get("name") == "write_file"
            for m in body["messages"]
            for b in _blocks(m)
        )
        if not wrote:
            digest = _digest(body)
            paths = _deliverables(body) or [f"notes/{digest}.md"]
            writes = []
            for path in paths:
                name, text = _fake_file(path, digest)
                writes.append(ToolCall("write_file", {"path": name, "content": text}))
            return ToolCalls(tuple(writes), text="Writing the deliverables.")
        return ToolCalls((ToolCall("submit", {"summary": f"Fake work by {body['model']}."}),))
    if tools:
        return EchoNote()
    return TextReply(f"A fake answer from {body['model']}.")


def _instance(schema: Any, defs: dict[str, Any], where: str, digest: str) -> Any:
    """A deterministic JSON value that satisfies a (structured-output) schema."""
    if not isinstance(schema, dict):
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _instance(defs.get(ref.removeprefix("#/$defs/")), defs, where, digest)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        variants = schema.get(key)
        if isinstance(variants, list) and variants:
            real = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
            return _instance((real or variants)[0], defs, where, digest)
    kind = schema.get("type")
    if kind == "object":
        return {
            name: _instance(sub, defs, f"{where}.{name}" if where else name, digest)
            for name, sub in (schema.get("properties") or {}).items()
        }
    if kind == "array":
        return [_instance(schema.get("items"), defs, f"{where}[0]", digest)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if where.endswith("path"):
        return f"notes/{digest}.md"
    return f"Fake {where or 'text'} ({digest})."


# Sending.


def _send_json(handler: _Handler, status: int, payload: Any, number: int) -> None:
    data = json.dumps(payload).encode("utf-8")
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("request-id", f"req_fake_{number:06d}")
    handler.send_header("content-length", str(len(data)))
    _send_extra_headers(handler)
    handler.end_headers()
    handler.wfile.write(data)


def _send_extra_headers(handler: _Handler) -> None:
    """The rate-limit headers the fake decided for this request (see set_rate_limit)."""
    for name, value in handler.extra_headers.items():
        handler.send_header(name, value)


def _error_body(
    error_type: str, message: str, number: int, error_code: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error, "request_id": f"req_fake_{number:06d}"}


def _send_error(handler: _Handler, error: ApiError, number: int) -> None:
    body = _error_body(error.error_type, error.message, number, error.error_code)
    data = json.dumps(body).encode("utf-8")
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
    _send_extra_headers(handler)
    handler.end_headers()
    handler.wfile.write(data)


def message_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Turns a Message into the documented stream of server-sent events."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**message["usage"], "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opening = {**block, "input": {}}
            text = json.dumps(block["input"])
            if message["stop_reason"] == "max_tokens":
                text = text[:-1]  # the input was cut before its end
            deltas = [
                {"type": "input_json_delta", "partial_json": text[i : i + 64]}
                for i in range(0, len(text), 64)
            ]
        elif block["type"] == "thinking":
            opening = {**block, "thinking": "", "signature": ""}
            deltas = [{"type": "signature_delta", "signature": block["signature"]}]
        else:
            opening = {**block, "text": ""}
            deltas = [
                {"type": "text_delta", "text": block["text"][i : i + 256]}
                for i in range(0, len(block["text"]), 256)
            ] or [{"type": "text_delta", "text": ""}]
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
    plan: _Plan,
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
    _send_extra_headers(handler)
    handler.end_headers()
    handler.close_connection = True
    stop = stopping or threading.Event()
    for sent, (event, data) in enumerate(message_events(plan.message)):
        if plan.stream_error is not None and sent == plan.stream_error.after_events:
            error = _error_body(plan.stream_error.error_type, plan.stream_error.message, number)
            handler.wfile.write(f"event: error\ndata: {json.dumps(error)}\n\n".encode())
            handler.wfile.flush()
            return
        if plan.stream_stall is not None and sent == plan.stream_stall.after_events:
            stop.wait(plan.stream_stall.seconds)
            return
        if pacing and stop.wait(pacing):
            return
        handler.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        handler.wfile.flush()

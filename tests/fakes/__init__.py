"""Fakes of the outermost edge only: external services Maestro talks to."""

from tests.fakes.anthropic_server import (
    ApiError,
    Auto,
    EchoNote,
    FakeAnthropic,
    JsonAnswer,
    MaxTokensStop,
    RecordedRequest,
    Stall,
    StreamError,
    StreamStall,
    TextReply,
    ToolCall,
    ToolCalls,
    ToolResult,
)

__all__ = [
    "ApiError",
    "Auto",
    "EchoNote",
    "FakeAnthropic",
    "JsonAnswer",
    "MaxTokensStop",
    "RecordedRequest",
    "Stall",
    "StreamError",
    "StreamStall",
    "TextReply",
    "ToolCall",
    "ToolCalls",
    "ToolResult",
]

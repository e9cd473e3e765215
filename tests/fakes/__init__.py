"""Fakes of the outermost edge only: external services Maestro talks to."""

from tests.fakes.anthropic_server import (
    ApiError,
    EchoNote,
    FakeAnthropic,
    MaxTokensStop,
    RecordedRequest,
    Stall,
    TextReply,
    ToolResult,
)

__all__ = [
    "ApiError",
    "EchoNote",
    "FakeAnthropic",
    "MaxTokensStop",
    "RecordedRequest",
    "Stall",
    "TextReply",
    "ToolResult",
]

"""What a test's gRPC server received."""

from __future__ import annotations

from typing import Any

import grpc


class RecordsMethods(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Records the method of every call the server receives, known or not."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.methods.append(details.method.rsplit("/", 1)[-1])
        return await continuation(details)

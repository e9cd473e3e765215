"""Channels to a LocalStack's gateway, with the local user's token (as the CLI uses it)."""

from __future__ import annotations

import grpc

from maestro.cli.credentials import read_local_token
from maestro.cli.stack import LocalStack
from maestro.core.client import insecure_channel


def gateway_channel(stack: LocalStack) -> grpc.aio.Channel:
    """A channel to the stack's gateway that presents the stack's own user token."""
    token = read_local_token(stack.data_dir)
    assert token is not None, "the stack has written no token"
    return insecure_channel(stack.gateway_address, token=token)

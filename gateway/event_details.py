"""Typed event details: `RunEvent.details` from the string attributes the store keeps.

The store records an event's facts as a string map (cheap to write, one shape for every
event type). Clients in other languages want them typed, so the gateway fills the
`details` oneof member of the event's type, each field from the attribute of the same
name, parsed by the field's type. The map stays in the answer for compatibility.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import cast

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from maestro.api.gateway.v1 import gateway_pb2

log = logging.getLogger(__name__)

DETAILS_OF_TYPE: Mapping[str, str] = {
    "RUN_CREATED": "run_created",
    "RUN_STARTED": "run_started",
    "RUN_QUEUED": "queued",
    "STEP_QUEUED": "queued",
    "STEP_STARTED": "step_started",
    "STEP_PROGRESS": "step_progress",
    "STEP_SUCCEEDED": "step_succeeded",
    "STEP_RETRY_SCHEDULED": "attempt_failed",
    "STEP_FAILED": "attempt_failed",
    "ATTEMPT_LOST": "attempt_failed",
    "ARTIFACT_RECORDED": "artifact_recorded",
    "STEP_BLOCKED": "reason",
    "RUN_SUCCEEDED": "run_ended",
    "RUN_FAILED": "run_ended",
    "RUN_CANCELLED": "run_ended",
}
"""Event type (without its EVENT_TYPE_ prefix) -> the `details` member it fills."""

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}


def fill_details(
    event: gateway_pb2.RunEvent, event_type: str, attributes: Mapping[str, str]
) -> None:
    """Sets the `details` member of `event_type` on `event` from `attributes`.

    An attribute that does not parse as its field's type is left out of the typed
    details (it stays in `attributes`) and logged: the store wrote something this code
    does not expect, which is a bug to see, not a reason to fail the whole read.
    """
    member = DETAILS_OF_TYPE.get(event_type)
    if member is None:
        return
    details: Message = getattr(event, member)
    details.SetInParent()
    # The stubs type descriptors as a union of the pure-Python and upb classes.
    for field in cast("list[FieldDescriptor]", details.DESCRIPTOR.fields):
        raw = attributes.get(field.name)
        if raw is None:
            continue
        value = _parse(field, raw)
        if value is None:
            log.warning(
                "event %s attribute %s=%r is not a %s; left out of its typed details",
                event_type,
                field.name,
                raw[:50],
                field.type,
            )
            continue
        setattr(details, field.name, value)


def _parse(field: FieldDescriptor, raw: str) -> str | int | float | bool | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        return raw
    if field.type == FieldDescriptor.TYPE_BOOL:
        return {"true": True, "false": False}.get(raw)
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        try:
            return float(raw)
        except ValueError:
            return None
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        try:
            number = int(raw)
        except ValueError:
            return None
        return number if low <= number <= high else None
    raise TypeError(f"details field {field.full_name} has a type this converter lacks")

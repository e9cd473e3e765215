"""Typed event details: `RunEvent.details` from the string attributes the store keeps.

The store records an event's facts as a string map (cheap to write, one shape for every
event type). Clients in other languages want them typed, so the gateway fills the
`details` oneof member of the event's type, each field from the attribute of the same
name, parsed by the field's type. The map stays in the answer for compatibility.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

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
    "GATE_EVALUATED": "gate_evaluated",
    "REWORK_REQUESTED": "rework_requested",
    "APPROVAL_REQUESTED": "approval_requested",
    "STEP_APPROVED": "decision",
    "STEP_REJECTED": "decision",
}
"""Event type (without its EVENT_TYPE_ prefix) -> the `details` member it fills."""

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}

Parsed = str | int | float | bool | None


def details_for(event_type: str, attributes: Mapping[str, str]) -> dict[str, Any]:
    """The `details` member of `event_type` built from `attributes`, as a keyword
    argument for `RunEvent(...)`; empty for a type without typed details.

    An attribute that does not parse as its field's type is left out of the typed
    details (it stays in `attributes`) and logged: the store wrote something this code
    does not expect, which is a bug to see, not a reason to fail the whole read.
    """
    plan = _PLANS.get(event_type)
    if plan is None:
        return {}
    member, message_class, fields = plan
    values: dict[str, Parsed] = {}
    for name, parse in fields:
        raw = attributes.get(name)
        if raw is None:
            continue
        value = parse(raw)
        if value is None:
            log.warning(
                "event %s attribute %s=%r does not parse; left out of its typed details",
                event_type,
                name,
                raw[:50],
            )
            continue
        values[name] = value
    return {member: message_class(**values)}


def _parser(field: FieldDescriptor) -> Callable[[str], Parsed]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return str
    if field.type == FieldDescriptor.TYPE_BOOL:
        return {"true": True, "false": False}.get
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        return _float
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        return lambda raw: _int(raw, low, high)
    raise TypeError(f"details field {field.full_name} has a type this converter lacks")


def _float(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


def _int(raw: str, low: int, high: int) -> int | None:
    try:
        number = int(raw)
    except ValueError:
        return None
    return number if low <= number <= high else None


_Plan = tuple[str, type[Message], tuple[tuple[str, Callable[[str], Parsed]], ...]]
"""The details member, its message class, and each field's name and parser."""


def _plan(member: str) -> _Plan:
    message_type = gateway_pb2.RunEvent.DESCRIPTOR.fields_by_name[member].message_type
    assert message_type is not None, f"RunEvent.{member} is a message field"
    message_class = getattr(gateway_pb2, message_type.name)
    # The stubs type descriptors as a union of the pure-Python and upb classes.
    fields = cast("list[FieldDescriptor]", message_type.fields)
    return member, message_class, tuple((f.name, _parser(f)) for f in fields)


# Worked out once, at import: the gateway converts every event it sends.
_PLANS = {event_type: _plan(member) for event_type, member in DETAILS_OF_TYPE.items()}

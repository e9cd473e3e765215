"""The public API's capacity messages are the internal API's, field for field: the
gateway passes the scheduler's answer on as bytes."""

from google.protobuf.descriptor import Descriptor, EnumDescriptor

from maestro.api.gateway.v1 import gateway_pb2
from maestro.api.scheduler.v1 import scheduler_pb2


def _shape(descriptor: Descriptor) -> list[tuple[str, int, int, str]]:
    return [
        (f.name, f.number, f.type, f.message_type.name if f.message_type else "")
        for f in descriptor.fields
    ]


def _values(descriptor: EnumDescriptor) -> list[tuple[str, int]]:
    return [(v.name, v.number) for v in descriptor.values]


def test_capacity_messages_match_field_for_field() -> None:
    for name in ("Capacity", "ModelCapacity", "GetCapacityRequest"):
        public = gateway_pb2.DESCRIPTOR.message_types_by_name[name]
        internal = scheduler_pb2.DESCRIPTOR.message_types_by_name[name]
        assert _shape(public) == _shape(internal), name
    assert _values(gateway_pb2.DESCRIPTOR.enum_types_by_name["BreakerState"]) == _values(
        scheduler_pb2.DESCRIPTOR.enum_types_by_name["BreakerState"]
    )


def test_a_scheduler_answer_reads_as_the_public_message() -> None:
    answer = scheduler_pb2.Capacity(scheduler="s1")
    model = answer.models.add(
        model="m", breaker=scheduler_pb2.BREAKER_STATE_OPEN, overloads=3, requests_limit=50
    )
    model.requests_used = 0  # set, though zero: presence travels
    public = gateway_pb2.Capacity.FromString(answer.SerializeToString())
    (seen,) = public.models
    assert (public.scheduler, seen.model, seen.overloads) == ("s1", "m", 3)
    assert seen.breaker == gateway_pb2.BREAKER_STATE_OPEN
    assert seen.HasField("requests_used") and not seen.HasField("input_tokens_used")

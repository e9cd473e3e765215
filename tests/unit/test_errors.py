from maestro.core.errors import (
    Code,
    FailedPrecondition,
    InvalidArgument,
    MaestroError,
    NotFound,
    error_for_code,
)


def test_invalid_argument_round_trips_field_and_reason() -> None:
    original = InvalidArgument("steps[a].timeout", "'5 minutes' is not a duration")
    rebuilt = error_for_code(original.code, original.message)
    assert isinstance(rebuilt, InvalidArgument)
    assert (rebuilt.field, rebuilt.reason) == ("steps[a].timeout", "'5 minutes' is not a duration")


def test_other_codes_rebuild_their_class() -> None:
    assert isinstance(error_for_code(Code.NOT_FOUND, "gone"), NotFound)
    assert isinstance(error_for_code(Code.FAILED_PRECONDITION, "no"), FailedPrecondition)
    unknown = error_for_code(Code.UNAUTHENTICATED, "who")
    assert isinstance(unknown, MaestroError)
    assert unknown.code is Code.UNAUTHENTICATED

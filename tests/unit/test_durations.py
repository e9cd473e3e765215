import re
from datetime import timedelta

import pytest
from pydantic import TypeAdapter

from maestro.workflow import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1m30s", timedelta(minutes=1, seconds=30)),
        ("1h2m3s400ms", timedelta(hours=1, minutes=2, seconds=3, milliseconds=400)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("0.5s", timedelta(milliseconds=500)),
        ("90", timedelta(seconds=90)),
        ("2.5", timedelta(seconds=2.5)),
        (" 5m ", timedelta(minutes=5)),
        ("PT10M", timedelta(minutes=10)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("PT0.25S", timedelta(milliseconds=250)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P1W", timedelta(days=7)),
        ("P1Y35D", timedelta(days=400)),
    ],
)
def test_parses_strings(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (30, timedelta(seconds=30)),
        (0.25, timedelta(milliseconds=250)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_numbers_are_seconds_and_timedeltas_pass_through(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 minutes", "'5 minutes' is not a duration; use e.g. 30s, 5m, 1h30m"),
        ("1h 30m", "'1h 30m' is not a duration; use e.g. 30s, 5m, 1h30m"),
        ("", "'' is not a duration"),
        ("abc", "'abc' is not a duration"),
        ("5M", "'5M' is not a duration"),  # months or minutes? Neither is guessed.
        ("10x", "'10x' is not a duration"),
        ("P1M", "'P1M' is not a duration"),
        ("PT", "'PT' is not a duration"),
        ("P", "'P' is not a duration"),
        ("1e3", "'1e3' is not a duration"),
        ("30s5m", "write each unit once, largest first"),
        ("1m1m", "write each unit once, largest first"),
        ("0s", "'0s' is zero; a duration must be positive"),
        ("0", "'0' is zero; a duration must be positive"),
        ("PT0S", "'PT0S' is zero"),
        ("-5s", "'-5s' is negative; a duration must be positive"),
        (0, "0 is zero; a duration must be positive"),
        (-1.5, "-1.5 is negative; a duration must be positive"),
        (timedelta(0), "is zero; a duration must be positive"),
        (timedelta(seconds=-1), "is negative; a duration must be positive"),
        (True, "True is not a duration"),
        (float("nan"), "nan is not a duration"),
        (float("inf"), "inf is not a duration"),
        ([1], "expected a duration such as 30s, 5m or 1h30m, got list"),
        (None, "expected a duration such as 30s, 5m or 1h30m, got NoneType"),
        ("1000000000d", "'1000000000d' is too long; the longest duration is 999999999 days"),
        (10**20, "is too long"),
    ],
)
def test_rejects_bad_values_with_a_precise_reason(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)


def test_sub_microsecond_durations_round_to_zero_and_are_rejected():
    with pytest.raises(ValueError, match="is zero"):
        parse_duration("0.0000001s")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(minutes=10), "10m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(minutes=1, seconds=30.25), "1m30.25s"),
        (timedelta(days=2, seconds=1), "2d1s"),
        (timedelta(microseconds=1), "0.000001s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_format_duration(value, text):
    assert format_duration(value) == text


@pytest.mark.parametrize(
    "value",
    [
        timedelta(microseconds=1),
        timedelta(milliseconds=1500),
        timedelta(seconds=59.999999),
        timedelta(days=400, hours=3, microseconds=7),
        timedelta(days=999_999_999),
    ],
)
def test_formatted_and_iso_forms_parse_back_to_the_same_value(value):
    assert parse_duration(format_duration(value)) == value
    # pydantic writes timedeltas to JSON as ISO 8601; stored specs must load back.
    iso = TypeAdapter(timedelta).dump_python(value, mode="json")
    assert parse_duration(iso) == value

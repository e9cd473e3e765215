"""The API's rate-limit headers, read by the worker and passed on to the scheduler."""

from datetime import UTC, datetime

from maestro.api.worker.v1 import worker_pb2
from persona_service.convert import rate_limits_to_proto
from persona_service.rate_limits import from_headers, retry_after_seconds
from scheduler.convert import rate_limits_from_proto

HEADERS = {
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-requests-reset": "2026-11-30T18:00:01Z",
    "anthropic-ratelimit-input-tokens-limit": "2000000",
    "anthropic-ratelimit-input-tokens-remaining": "1990000",
    "anthropic-ratelimit-input-tokens-reset": "2026-11-30T18:00:02Z",
    "anthropic-ratelimit-output-tokens-limit": "400000",
    "anthropic-ratelimit-output-tokens-remaining": "not a number",
    "retry-after": "7",
}


def test_headers_are_read_and_travel_to_the_scheduler_unchanged() -> None:
    report = from_headers(HEADERS, "claude-sonnet-5-5")
    assert report is not None
    assert report.requests_remaining == 3999
    assert report.input_tokens_reset == datetime(2026, 11, 30, 18, 0, 2, tzinfo=UTC)
    assert report.output_tokens_limit == 400000
    assert report.output_tokens_remaining is None  # unreadable: left out, not guessed
    assert report.retry_after == 7

    message = worker_pb2.StepFailure(rate_limits=rate_limits_to_proto(report))
    seen = rate_limits_from_proto(message.rate_limits)
    assert seen.model == "claude-sonnet-5-5"
    assert (seen.requests_limit, seen.requests_remaining) == (4000, 3999)
    assert seen.output_tokens_remaining is None
    assert seen.retry_after == 7
    assert seen.resets[1] == datetime(2026, 11, 30, 18, 0, 2, tzinfo=UTC).timestamp()
    assert seen.resets[2] is None


def test_an_answer_without_rate_limit_headers_has_no_report() -> None:
    assert from_headers({"request-id": "req_1"}, "m") is None


def test_retry_after_ms_wins_and_a_date_is_not_parsed() -> None:
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None


def test_the_latest_call_s_answer_time_travels_even_without_headers() -> None:
    from persona_service.usage import UsageMeter

    meter = UsageMeter()
    assert meter.report() is None  # no call, nothing to say
    meter.start_call()
    assert meter.report() is None  # asked, but no answer yet: the API may not know
    meter.answer_began()
    first = meter.answer_time
    meter.answer_began()  # a later event of the same answer
    assert meter.answer_time == first
    meter.start_call()
    assert meter.report() is None  # the latest call has no answer yet
    meter.answer_began()
    assert meter.answer_time is not None and first is not None
    assert meter.answer_time >= first  # each call is settled with its own answer's time
    report = meter.report()
    assert report is not None and report.first_answer_time == meter.answer_time
    seen = rate_limits_from_proto(rate_limits_to_proto(report))
    assert seen.first_answer == report.first_answer_time.timestamp()
    assert seen.requests_limit is None and seen.empty

"""A model stream that stays quiet is reported while it waits, so watchers (the live view,
`maestro runs events`) can tell a quiet model from a stuck worker."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.fakes import FakeAnthropic
from tests.integration.worker_harness import running_worker, step_request


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


async def test_a_quiet_stream_gets_a_note_each_interval_until_the_answer(
    fake: FakeAnthropic,
) -> None:
    fake.push_stall(1.2)  # the answer comes after 1.2 s of silence
    async with running_worker(fake, quiet_note_every=0.3, idle_timeout=10) as worker:
        outcome = await worker.execute(step_request("requirements_analyst"), timeout=30)

    assert outcome.result.summary  # the step still succeeded
    quiet = [n for n in outcome.notes if n.startswith("no output from claude-sonnet-5-5 for ")]
    assert 2 <= len(quiet) <= 4, outcome.notes
    seconds = [float(re.search(r"for ([\d.]+)s", n).group(1)) for n in quiet]  # type: ignore[union-attr]
    assert seconds == sorted(seconds) and seconds[0] >= 0.3
    assert all("given up after 10s without output" in n for n in quiet)


async def test_a_stream_that_keeps_writing_gets_no_quiet_note(fake: FakeAnthropic) -> None:
    async with running_worker(fake, quiet_note_every=0.3, idle_timeout=10) as worker:
        outcome = await worker.execute(step_request("requirements_analyst"), timeout=30)
    assert outcome.result.summary
    assert not [n for n in outcome.notes if n.startswith("no output from")]

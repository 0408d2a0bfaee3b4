"""The time bounds of an Events API slice, at the millisecond resolution of thin events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from webhook_worker.events_api import ms_ceiling
from webhook_worker.stripe_events import rfc3339, rfc3339_ms


def test_an_event_created_in_the_last_millisecond_before_the_end_is_inside_the_slice():
    end = datetime(2026, 12, 7, 2, 1, 23, 335_100, tzinfo=UTC)
    created = rfc3339(end.timestamp() - 0.0001)  # 100 µs earlier, the same millisecond
    assert created == "2026-12-07T02:01:23.335Z"
    assert created < rfc3339_ms(ms_ceiling(end)) == "2026-12-07T02:01:23.336Z"
    # A bound on a whole millisecond stays where it is: adjacent slices meet exactly.
    assert ms_ceiling(end.replace(microsecond=336_000)) == ms_ceiling(end)
    assert ms_ceiling(end + timedelta(microseconds=901)) == ms_ceiling(end) + 1


def test_created_never_runs_back_a_second_at_the_end_of_one():
    assert rfc3339(1765072883.9996) == "2025-12-07T02:01:23.999Z"

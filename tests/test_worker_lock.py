"""The event's advisory lock: taken by the claim, released by the finish or after.

dispatch.process runs in this process against the real database; a second
psycopg session plays the other worker, holding the lock as a live worker
would, or having died without finishing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from webhook_ingest.models import WebhookEvent
from webhook_ingest.parsing import parse_event
from webhook_worker import attempt_sql, dispatch, webhooks
from webhook_worker.models import WebhookAttempt
from webhook_worker.stripe_events import encode_event

from .helpers import make_event

pytestmark = pytest.mark.django_db(transaction=True)

LOCK = "SELECT pg_advisory_lock(%s::int4, hashtext(%s::text))"
UNLOCK = "SELECT pg_advisory_unlock(%s::int4, hashtext(%s::text))"


def stored(behavior: str | None = None) -> str:
    body = encode_event(make_event("invoice.created", behavior))
    parsed = parse_event(body)
    assert WebhookEvent.objects.record(parsed, body, "default")
    return parsed.id


def our_locks_anywhere() -> int:
    """Advisory locks in our namespace held by any session."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s",
            [attempt_sql.LOCK_NAMESPACE],
        )
        return int(cursor.fetchone()[0])


@pytest.fixture
def other_worker(test_db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(test_db_url, autocommit=True) as conn:
        yield conn


def test_event_held_by_a_live_worker_is_left_alone(other_worker, monkeypatch):
    event_id = stored()
    other_worker.execute(LOCK, [attempt_sql.LOCK_NAMESPACE, event_id])
    monkeypatch.setattr(dispatch, "LOCK_WAIT_SECONDS", 0.2)

    result = dispatch.process(event_id, trigger="delivery")

    assert result.outcome == "busy"
    event = WebhookEvent.objects.get(pk=event_id)
    assert (event.status, event.attempts) == ("pending", 0)
    assert not WebhookAttempt.objects.filter(event_id=event_id).exists()
    assert our_locks_anywhere() == 1  # the other worker's, untouched


def test_lock_freed_while_waiting_is_taken_once_and_released(other_worker, monkeypatch):
    event_id = stored()
    other_worker.execute(LOCK, [attempt_sql.LOCK_NAMESPACE, event_id])
    monkeypatch.setattr(dispatch, "LOCK_WAIT_SECONDS", 10)
    release = threading.Timer(
        0.3, lambda: other_worker.execute(UNLOCK, [attempt_sql.LOCK_NAMESPACE, event_id])
    )
    release.start()
    started = time.monotonic()
    try:
        result = dispatch.process(event_id, trigger="delivery")
    finally:
        release.join()

    assert result.outcome == "succeeded"
    assert time.monotonic() - started >= 0.3  # it waited for the other worker
    assert WebhookEvent.objects.get(pk=event_id).status == "succeeded"
    # Taken once (the wait), not again by the claim: nothing left held.
    assert our_locks_anywhere() == 0


def test_processing_event_whose_worker_died_is_taken_over(other_worker):
    event_id = stored()
    # The other worker claims the event and dies before finishing: its
    # session ends, and its lock with it.
    with psycopg.connect(other_worker.info.dsn, autocommit=True) as doomed:
        doomed.execute(LOCK, [attempt_sql.LOCK_NAMESPACE, event_id])
        WebhookEvent.objects.filter(pk=event_id).update(status="processing", attempts=1)
        WebhookAttempt.objects.create(
            event_id=event_id, number=1, trigger="delivery", started_at=timezone.now()
        )

    result = dispatch.process(event_id, trigger="delivery")

    assert result.outcome == "succeeded"
    outcomes = list(
        WebhookAttempt.objects.filter(event_id=event_id).order_by("number").values_list(
            "number", "outcome"
        )
    )  # fmt: skip
    assert outcomes == [(1, "lost"), (2, "succeeded")]
    assert our_locks_anywhere() == 0


@pytest.mark.parametrize("behavior", [None, "always_fail", "permanent"])
def test_no_lock_outlives_an_attempt(behavior):
    event_id = stored(behavior)
    first = dispatch.process(event_id, trigger="delivery")
    assert (
        first.outcome
        == {None: "succeeded", "always_fail": "retry", "permanent": "failed"}[behavior]
    )
    assert our_locks_anywhere() == 0
    # Another copy: nothing to run, or (the suite's retry delays are under
    # a second) the retry, now due. Either way no lock is left behind.
    second = dispatch.process(event_id, trigger="delivery")
    assert (
        second.outcome
        == {None: "skipped", "always_fail": "retry", "permanent": "skipped"}[behavior]
    )
    assert our_locks_anywhere() == 0


def test_second_copy_waits_for_the_running_attempt_and_runs_nothing(monkeypatch):
    """The finish releases the lock before its commit: the copy must still see the outcome."""
    event_id = stored("sleep:0.5")
    results: dict[str, str] = {}

    def first() -> None:
        try:
            results["first"] = dispatch.process(event_id, trigger="delivery").outcome
        finally:
            connection.close()

    runner = threading.Thread(target=first)
    runner.start()
    # Wait until the first copy's claim committed, then deliver the second.
    deadline = time.monotonic() + 10
    while WebhookEvent.objects.get(pk=event_id).status != "processing":
        assert time.monotonic() < deadline, "the first copy never claimed the event"
        time.sleep(0.01)
    second = dispatch.process(event_id, trigger="delivery")
    runner.join()

    assert results["first"] == "succeeded"
    assert second.outcome == "skipped", second
    assert list(
        WebhookAttempt.objects.filter(event_id=event_id).values_list("outcome", flat=True)
    ) == ["succeeded"]
    assert our_locks_anywhere() == 0


def test_failure_record_leaves_an_attempt_another_worker_closed(other_worker, monkeypatch):
    """The finish releases the lock before its commit: if that fails, another may take over."""
    event_id = stored()
    attempts, events = WebhookAttempt._meta.db_table, WebhookEvent._meta.db_table

    def taken_over(event: Any, **kwargs: Any) -> None:
        # Meanwhile another worker closed this attempt as lost and started its own.
        other_worker.execute(
            f"UPDATE {attempts} SET outcome = 'lost' WHERE event_id = %s AND outcome = 'running'",
            [event_id],
        )
        other_worker.execute(
            f"UPDATE {events} SET attempts = attempts + 1 WHERE id = %s", [event_id]
        )
        raise RuntimeError("the run failed")

    monkeypatch.setattr(dispatch, "run_handlers", lambda event, progress: taken_over(event=event))

    result = dispatch.process(event_id, trigger="delivery")

    assert result.outcome == "skipped", result
    attempt = WebhookAttempt.objects.get(event_id=event_id)
    assert (attempt.outcome, attempt.error_class) == ("lost", "")
    assert our_locks_anywhere() == 0


def broken_registry(event_type: str) -> tuple[Any, ...]:
    raise RuntimeError("the registry failed before any handler ran")


@pytest.mark.parametrize("where", ["before the handlers", "after the handlers"])
def test_an_exception_anywhere_in_the_attempt_is_recorded_and_retried(monkeypatch, where):
    """Not only handlers fail: the registry before them, the finish after them. Either
    way the attempt is closed with its error, the event follows the retry schedule,
    and no lock is left: an event is never left `processing` by a live worker."""
    if where == "before the handlers":
        monkeypatch.setattr(webhooks.registry, "handlers_for", broken_registry)
        expected = "RuntimeError"
    else:
        monkeypatch.setattr(attempt_sql, "finish_sql", lambda: "SELECT 1 / 0, 1")
        expected = "django.db.utils.DataError"
    event_id = stored()

    result = dispatch.process(event_id, trigger="delivery")

    assert result.outcome == "retry"
    event = WebhookEvent.objects.get(pk=event_id)
    assert (event.status, event.attempts) == ("retrying", 1)
    attempt = WebhookAttempt.objects.get(event_id=event_id)
    assert (attempt.outcome, attempt.error_class) == ("retry", expected)
    assert attempt.traceback
    assert our_locks_anywhere() == 0

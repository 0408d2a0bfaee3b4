"""Processing in a real Celery worker process: order, atomicity, retries, dead-lettering."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.testapp.models import SideEffect
from webhook_ingest.models import WebhookEvent
from webhook_worker.enqueue import enqueue_or_mark
from webhook_worker.models import WebhookAttempt

from .helpers import handler_calls, make_event, post_signed, wait_for_status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]


def calls(log: Path, event_id: str) -> list[str]:
    return [name for _, name, _ in handler_calls(log, event_id)]


def outcomes(event_id: str) -> list[str]:
    return list(
        WebhookAttempt.objects.filter(event_id=event_id)
        .order_by("number")
        .values_list("outcome", flat=True)
    )


def test_handlers_run_in_documented_order_in_the_worker(client, handler_log):
    event = make_event("customer.subscription.created")
    post_signed(client, event)
    wait_for_status(event["id"], "succeeded")
    assert calls(handler_log, event["id"]) == [
        "all",  # handler_all first
        "customer",  # then the shortest prefix, in registration order
        "twice",  # registered for "customer" and the full type: runs once, here
        "customer.subscription",
        "exact",  # the full type last
    ]


def test_multi_type_handler_runs_for_each_listed_type_only(client, handler_log):
    paid, created = make_event("invoice.paid"), make_event("invoice.created")
    post_signed(client, paid)
    post_signed(client, created)
    wait_for_status(paid["id"], "succeeded")
    wait_for_status(created["id"], "succeeded")
    assert calls(handler_log, paid["id"]) == ["all", "exact"]
    assert calls(handler_log, created["id"]) == ["all"]


def test_failed_attempt_rolls_back_its_writes_is_logged_and_retried(client, handler_log):
    event = make_event("invoice.paid", behavior="fail_first")
    post_signed(client, event)

    done = wait_for_status(event["id"], "succeeded")

    assert done.attempts == 2
    assert done.last_error == ""
    # Attempt 1 wrote rows before raising; only attempt 2's survived.
    assert sorted(
        SideEffect.objects.filter(event_id=event["id"]).values_list("attempt", "handler")
    ) == [
        (2, "all"),
        (2, "exact"),
    ]
    assert [a for _, _, a in handler_calls(handler_log, event["id"])] == [1, 2, 2]
    first, second = WebhookAttempt.objects.filter(event_id=event["id"]).order_by("number")
    assert (first.outcome, first.trigger) == ("retry", "delivery")
    assert first.error_class == "RuntimeError"
    assert first.error_message == "simulated failure on the first attempt"
    assert "Traceback" in first.traceback and "record_every_event" in first.traceback
    assert first.duration_ms is not None and first.finished_at is not None
    assert (second.outcome, second.trigger) == ("succeeded", "retry")
    # The retry waited for the schedule's first delay (0.5 s, minus 20 % jitter).
    assert (second.started_at - first.finished_at).total_seconds() >= 0.5 * 0.8 - 0.05


def test_always_failing_handler_is_dead_lettered_after_the_schedule(client):
    event = make_event("customer.updated", behavior="always_fail")
    post_signed(client, event)

    failed = wait_for_status(event["id"], "failed", timeout=60)

    assert failed.attempts == 4  # len(RETRY_SCHEDULE) + 1
    assert failed.last_error == "ValueError: this handler always fails"
    assert outcomes(event["id"]) == ["retry", "retry", "retry", "failed"]
    assert list(
        WebhookAttempt.objects.filter(event_id=event["id"])
        .order_by("number")
        .values_list("trigger", flat=True)
    ) == ["delivery", "retry", "retry", "retry"]
    assert not SideEffect.objects.filter(event_id=event["id"]).exists()


def test_permanent_failure_dead_letters_after_one_attempt(client):
    event = make_event("charge.failed", behavior="permanent")
    post_signed(client, event)

    failed = wait_for_status(event["id"], "failed")

    assert failed.attempts == 1
    assert outcomes(event["id"]) == ["failed"]
    assert "PermanentFailure" in failed.last_error
    assert not SideEffect.objects.filter(event_id=event["id"]).exists()


def test_on_commit_in_a_handler_fires_only_when_the_event_commits(client, handler_log):
    event = make_event("customer.created", behavior="on_commit")
    post_signed(client, event)
    wait_for_status(event["id"], "succeeded")
    committed = [
        (name, attempt)
        for _, name, attempt in handler_calls(handler_log, event["id"])
        if name == "on_commit"
    ]
    # Attempt 1 registered a callback too, then failed: it never ran.
    assert committed == [("on_commit", 2)]


def test_redelivered_message_for_a_finished_event_runs_nothing(client, handler_log):
    event = make_event("customer.created")
    post_signed(client, event)
    wait_for_status(event["id"], "succeeded")

    for _ in range(3):
        enqueue_or_mark(event["id"], event["type"])
    # A later event on the same queue is processed after those copies.
    marker = make_event("customer.created")
    post_signed(client, marker)
    wait_for_status(marker["id"], "succeeded")

    assert calls(handler_log, event["id"]).count("all") == 1
    assert WebhookEvent.objects.get(pk=event["id"]).attempts == 1


def test_message_for_an_unknown_event_is_dropped(client, worker):
    assert enqueue_or_mark("evt_never_stored_anywhere", "customer.created")
    marker = make_event()
    post_signed(client, marker)
    wait_for_status(marker["id"], "succeeded")
    assert worker.alive
    assert "evt_never_stored_anywhere not found" in worker.log()


def test_event_type_is_the_task_name_in_worker_logs_and_flower(client, worker):
    event = make_event("checkout.session.completed")
    post_signed(client, event)
    wait_for_status(event["id"], "succeeded")
    assert "process_event[checkout.session.completed][" in worker.log()


def test_a_worker_keeps_its_database_connection_across_tasks(client, worker, handler_log):
    """configure_celery's CELERY_DB_REUSE_MAX: Celery's Django fixup would otherwise
    open a new database connection for every task. Two pool processes, two sessions."""
    events = [make_event("customer.created", behavior="backend_pid") for _ in range(8)]
    for event in events:
        post_signed(client, event)
    for event in events:
        wait_for_status(event["id"], "succeeded")
    sessions = {
        name
        for event in events
        for _, name, _ in handler_calls(handler_log, event["id"])
        if name.startswith("backend:")
    }
    assert 1 <= len(sessions) <= 2, sessions

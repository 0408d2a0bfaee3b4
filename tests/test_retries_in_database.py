"""Retries longer than MAX_BROKER_DELAY wait in the database, and the sweeper publishes them.

No broker message is delayed longer than MAX_BROKER_DELAY, so no retry
schedule depends on Redis' visibility timeout or RabbitMQ's consumer_timeout,
and no worker holds delayed messages in memory for long.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test.utils import override_settings
from django.utils import timezone

from webhook_ingest.models import WebhookEvent
from webhook_worker import sweeper
from webhook_worker.models import WebhookAttempt
from webhook_worker.testing import run_handlers

from .faults import Lane, deliver, make_lane, redis_queued_tasks
from .helpers import make_event, wait_for_status, wait_until
from .ops import store

pytestmark = pytest.mark.django_db(transaction=True)


def settings_with(**changes: object) -> override_settings:
    return override_settings(
        STRIPE_WEBHOOKS={
            "ENDPOINTS": {"default": {"SECRETS": ["whsec_test"]}},
            "RETRY_JITTER": 0,
            **changes,
        }
    )


@pytest.mark.parametrize(
    ("delay", "scheduled"), [(60, True), (10, False)], ids=["longer", "shorter"]
)
def test_a_failed_attempt_schedules_its_retry_by_length(delay, scheduled):
    """Longer than MAX_BROKER_DELAY (30 s): retrying and scheduled, due after the
    delay; no longer: a countdown message, so not scheduled."""
    with settings_with(RETRY_SCHEDULE=[delay], MAX_BROKER_DELAY=30):
        event = run_handlers(make_event(behavior="fail_first"), raise_errors=False)
    assert (event.status, event.scheduled) == ("retrying", scheduled)
    # This process has not set OpenTelemetry up: no trace context is stored.
    assert event.traceparent == ""
    attempt = WebhookAttempt.objects.get(event_id=event.pk)
    assert attempt.outcome == "retry"
    assert attempt.finished_at is not None
    waited = (event.due_at - attempt.finished_at).total_seconds()
    assert delay - 1 < waited < delay + 1


def test_the_sweeper_publishes_only_retries_that_are_due():
    now = timezone.now()
    due = store("customer.created", "retrying", attempts=1, age=timedelta(minutes=2))
    later = store("customer.created", "retrying", attempts=1)
    in_flight = store("customer.created", "retrying", attempts=1)
    WebhookEvent.objects.filter(pk__in=[due.pk, later.pk]).update(scheduled=True)
    WebhookEvent.objects.filter(pk=due.pk).update(due_at=now - timedelta(seconds=1))
    WebhookEvent.objects.filter(pk=later.pk).update(due_at=now + timedelta(hours=1))
    # A short retry: its countdown message is on its way; not the sweeper's to send.
    WebhookEvent.objects.filter(pk=in_flight.pk).update(due_at=now - timedelta(seconds=1))

    with settings_with(RETRY_SCHEDULE=[3600], REQUEUE_AFTER=300):
        result = sweeper.sweep(now)

    assert (result.retries, result.stale, result.broker_unreachable) == (1, 0, False)
    flags = dict(WebhookEvent.objects.values_list("pk", "scheduled"))
    assert (flags[due.pk], flags[later.pk], flags[in_flight.pk]) == (False, True, False)
    # Sent once: the next run finds nothing to send.
    with settings_with(RETRY_SCHEDULE=[3600], REQUEUE_AFTER=300):
        assert sweeper.sweep(now).total == 0


@pytest.fixture
def lane(stack_env, log_dir):
    lane = make_lane(
        stack_env,
        log_dir,
        WEBHOOKS_TEST_OVERRIDES=json.dumps(
            {"RETRY_SCHEDULE": [6], "RETRY_JITTER": 0, "MAX_BROKER_DELAY": 1}
        ),
    )
    yield lane
    lane.stop()


def test_a_long_retry_waits_in_the_database_then_runs_when_due(lane: Lane, settings):
    """Real web, worker and beat: between the attempts nothing is in the broker;
    the second attempt starts when due, triggered as a retry, and succeeds."""
    web, worker = lane.web(workers=1), lane.worker(concurrency=1)
    lane.beat()
    event = make_event("invoice.paid", behavior="fail_first")
    assert deliver(f"{web.url}/webhooks/stripe/", event) == 200

    first = wait_until(
        lambda: WebhookAttempt.objects.filter(event_id=event["id"], outcome="retry").first(),
        timeout=60,
        message="the first attempt to fail",
    )
    waiting = WebhookEvent.objects.get(pk=event["id"])
    assert (waiting.status, waiting.scheduled) == ("retrying", True)
    # Seconds before it is due: no message for it anywhere in the broker.
    assert redis_queued_tasks(settings.CELERY_BROKER_URL, lane.queue) == []

    done = wait_for_status(event["id"], "succeeded", timeout=60)
    second = WebhookAttempt.objects.get(event_id=event["id"], number=2)
    assert second.trigger == "retry"
    assert second.started_at >= first.finished_at + timedelta(seconds=5)
    assert done.attempts == 2
    assert worker.alive

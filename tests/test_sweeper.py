"""The sweeper finds events whose broker message was lost, and enqueues each exactly once."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from webhook_ingest.models import WebhookEvent
from webhook_worker.models import WebhookAttempt
from webhook_worker.stripe_events import encode_event, post_event

from . import stack
from .constants import SECRET
from .helpers import handler_calls, make_event, wait_for_status
from .ops import PrivateBroker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker(tmp_path):
    broker = PrivateBroker(tmp_path / "redis").start()
    yield broker
    broker.stop()


def test_flushed_messages_are_recovered_once_with_two_sweepers_racing(
    broker, stack_env, log_dir, handler_log
):
    env = broker.env(stack_env)
    web = stack.gunicorn(env, log_dir, workers=1)
    try:
        events = [make_event("invoice.paid") for _ in range(30)]
        for event in events:
            assert post_event(f"{web.url}/webhooks/stripe/", encode_event(event), SECRET)[0] == 200
    finally:
        web.stop()
    ids = {e["id"] for e in events}
    assert set(broker.queued_event_ids()) == ids  # delivered to the broker...

    broker.client().flushall()  # ...and lost there (a Redis restart without persistence)
    # Time passes: the events are now REQUEUE_AFTER past due.
    WebhookEvent.objects.filter(pk__in=ids).update(due_at=timezone.now() - timedelta(minutes=10))

    sweepers = [
        subprocess.Popen(
            [stack.python(), "manage.py", "webhooks_requeue"],
            env=env,
            cwd=stack.ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in sweepers]

    assert [proc.returncode for proc in sweepers] == [0, 0], outputs
    queued = broker.queued_event_ids()
    assert sorted(queued) == sorted(ids)  # every event once, none twice

    worker = stack.celery_worker(env, log_dir, concurrency=2)
    try:
        for event_id in ids:
            wait_for_status(event_id, "succeeded", timeout=60)
    finally:
        worker.stop()
    for event_id in ids:
        assert [n for _, n, _ in handler_calls(handler_log, event_id)].count("all") == 1
        assert list(
            WebhookAttempt.objects.filter(event_id=event_id).values_list("trigger", flat=True)
        ) == ["sweeper"]

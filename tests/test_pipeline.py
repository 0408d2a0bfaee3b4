"""End to end: signed POST -> stored row -> real worker process -> handlers -> succeeded."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from config.celery_app import app as celery_app
from tests.testapp.models import SideEffect
from webhook_ingest.models import WebhookEvent
from webhook_worker.models import WebhookAttempt

from .helpers import handler_calls, make_event, post_signed, timed, wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)


def test_valid_event_is_acknowledged_stored_and_processed_once(client, worker, handler_log: Path):
    event = make_event("customer.created")

    response, elapsed_ms = timed(lambda: post_signed(client, event))

    assert response.status_code == 200
    assert response.json() == {"received": True, "id": event["id"], "duplicate": False}
    stored = WebhookEvent.objects.get(pk=event["id"])
    assert stored.type == "customer.created"
    processed = wait_for_status(event["id"], "succeeded")
    assert processed.attempts == 1
    assert processed.processed_at is not None
    assert SideEffect.objects.filter(event_id=event["id"], handler="all").count() == 1
    assert [name for _, name, _ in handler_calls(handler_log, event["id"])].count("all") == 1
    attempt = WebhookAttempt.objects.get(event_id=event["id"])
    assert attempt.outcome == "succeeded" and attempt.trigger == "delivery"
    print(f"\ningest response in {elapsed_ms:.1f} ms")


PUBLISH_ONCE = """
import django
django.setup()
from webhook_worker.enqueue import enqueue_or_mark
assert enqueue_or_mark("evt_first_publish", "customer.created")
"""


def test_first_publish_to_a_queue_no_worker_has_declared_is_kept(stack_env):
    """A web process may publish before any worker has started: the broker must keep it.

    (RabbitMQ drops a message for a queue nobody declared; on Redis the push creates it.)
    """
    queue = f"first-publish-{uuid.uuid4().hex[:8]}"
    env = {**stack_env, "WEBHOOKS_TEST_QUEUE": queue}
    subprocess.run([sys.executable, "-c", PUBLISH_ONCE], env=env, check=True, timeout=60)
    with celery_app.connection_for_write() as conn:
        channel = conn.default_channel
        try:
            _, messages, _ = channel.queue_declare(queue, passive=True)
            assert messages == 1
        finally:
            channel.queue_delete(queue)


def test_post_to_handler_completion_over_http(web, worker, handler_log: Path):
    """Sequential deliveries through gunicorn and a worker; prints the end-to-end latency."""
    import statistics
    import time
    from datetime import UTC, datetime

    from webhook_worker.stripe_events import encode_event, post_event

    from .constants import SECRET

    url = f"{web.url}/webhooks/stripe/"
    acks, totals = [], []
    for _ in range(20):
        event = make_event("customer.subscription.updated")
        body = encode_event(event)
        sent = datetime.now(UTC)
        start = time.perf_counter()
        status, _ = post_event(url, body, SECRET)
        acks.append((time.perf_counter() - start) * 1000)
        assert status == 200
        done = wait_for_status(event["id"], "succeeded")
        totals.append((done.processed_at - sent).total_seconds() * 1000)
        assert SideEffect.objects.filter(event_id=event["id"], handler="all").count() == 1
    print(
        f"\nPOST acknowledged: median {statistics.median(acks):.1f} ms, max {max(acks):.1f} ms"
        f"\nPOST to handlers committed: median {statistics.median(totals):.1f} ms, "
        f"max {max(totals):.1f} ms (20 sequential events)"
    )

"""Duplicates under concurrency, and the broker or database going away at ingest."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from devstack.services import EmbeddedRedis, free_port
from tests.testapp.models import SideEffect
from webhook_ingest.models import WebhookEvent
from webhook_worker.enqueue import SWEEP_AT_NEXT_RUN
from webhook_worker.models import WebhookAttempt
from webhook_worker.stripe_events import encode_event, post_event, sign_body

from . import stack
from .constants import SECRET
from .helpers import handler_calls, make_event, wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def threaded_web(stack_env, log_dir):
    """gunicorn with enough threads that 20 requests really run at once."""
    proc = stack.gunicorn(
        stack_env, log_dir, workers=2, extra=["--threads=10", "--worker-class=gthread"]
    )
    yield proc
    proc.stop()


def test_same_event_delivered_20_times_concurrently(threaded_web, worker, handler_log: Path):
    event = make_event("invoice.paid")
    body = encode_event(event)
    header = sign_body(body, SECRET)
    url = f"{threaded_web.url}/webhooks/stripe/"
    barrier = threading.Barrier(20)

    def deliver(_: int) -> requests.Response:
        session = requests.Session()
        barrier.wait()
        return session.post(
            url,
            data=body.encode(),
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(deliver, range(20)))

    assert [r.status_code for r in responses] == [200] * 20
    assert sorted(r.json()["duplicate"] for r in responses) == [False] + [True] * 19
    assert WebhookEvent.objects.filter(pk=event["id"]).count() == 1
    done = wait_for_status(event["id"], "succeeded")
    # Give any extra enqueued copies time to be consumed, then count.
    marker = make_event()
    assert post_event(url, encode_event(marker), SECRET)[0] == 200
    wait_for_status(marker["id"], "succeeded")
    assert done.attempts == 1
    assert SideEffect.objects.filter(event_id=event["id"], handler="all").count() == 1
    assert [n for _, n, _ in handler_calls(handler_log, event["id"])].count("all") == 1
    assert WebhookAttempt.objects.filter(event_id=event["id"]).count() == 1


@pytest.fixture
def own_broker(stack_env, log_dir, tmp_path):
    """A Redis broker this test may stop, with web, worker and beat using it."""
    redis = EmbeddedRedis(tmp_path / "redis")
    redis.start()
    env = dict(stack_env)
    env.update(
        CELERY_BROKER_URL=redis.url,
        WEBHOOKS_TEST_QUEUE=f"own-broker-{uuid.uuid4().hex[:8]}",
        WEBHOOKS_SWEEP_INTERVAL="1",
    )
    procs = [
        stack.gunicorn(env, log_dir),
        stack.celery_worker(env, log_dir, concurrency=2),
        stack.celery_beat(env, log_dir),
    ]
    yield redis, procs[0]
    for proc in procs:
        proc.stop()
    redis.stop()


def test_broker_down_at_ingest_events_are_stored_then_swept_when_it_returns(
    own_broker, handler_log
):
    redis, web = own_broker
    url = f"{web.url}/webhooks/stripe/"
    redis.stop()

    events = [make_event("customer.created") for _ in range(5)]
    results = [post_event(url, encode_event(e), SECRET) for e in events]

    assert [status for status, _ in results] == [200] * 5
    stored = WebhookEvent.objects.filter(pk__in=[e["id"] for e in events])
    assert stored.count() == 5
    assert set(stored.values_list("status", flat=True)) == {"pending"}
    # The publisher gives up on each and marks it due for the sweeper's next run.
    wait_until(lambda: stored.filter(due_at=SWEEP_AT_NEXT_RUN).count() == 5, timeout=30)
    assert "could not enqueue" in web.log()

    redis.start()  # same port, empty: nothing of the failed publishes survives

    for event in events:
        wait_for_status(event["id"], "succeeded", timeout=60)
    for event in events:
        assert [n for _, n, _ in handler_calls(handler_log, event["id"])].count("all") == 1
        assert list(
            WebhookAttempt.objects.filter(event_id=event["id"]).values_list("trigger", flat=True)
        ) == ["sweeper"]


def test_database_unreachable_at_ingest_answers_503_and_stores_nothing(stack_env, log_dir):
    env = dict(stack_env)
    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    web = stack.gunicorn(env, log_dir, workers=1)
    try:
        event = make_event()
        status, body = post_event(f"{web.url}/webhooks/stripe/", encode_event(event), SECRET)
    finally:
        web.stop()
    assert status == 503
    assert body["error"] == "storage_unavailable"
    assert "Traceback" not in str(body) and SECRET not in str(body)
    assert not WebhookEvent.objects.filter(pk=event["id"]).exists()


def test_workers_and_web_survive_the_broker_returning(own_broker):
    """After a broker outage the same web process publishes again without a restart."""
    redis, web = own_broker
    url = f"{web.url}/webhooks/stripe/"
    warm = make_event()
    assert post_event(url, encode_event(warm), SECRET)[0] == 200
    wait_for_status(warm["id"], "succeeded", timeout=30)

    redis.stop()
    redis.start()

    after = make_event()
    assert post_event(url, encode_event(after), SECRET)[0] == 200
    done = wait_for_status(after["id"], "succeeded", timeout=60)
    assert done.attempts == 1
    wait_until(lambda: WebhookAttempt.objects.filter(event_id=after["id"]).exists())

"""The view's background publisher: the response does not wait for the broker,
and what a process was handed is published before it exits, also after a fork."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from config.celery_app import app as celery_app
from webhook_ingest.models import WebhookEvent

from . import stack
from .faults import deliver, redis_queued_tasks
from .helpers import make_event, post_signed
from .stack import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Long enough that no response could come after it by accident, and shorter
# than the reference settings' socket_timeout (5 s), which an inline publish waits out.
PAUSE_MS = 3000
TASK = "webhook_worker.process_event"


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.client_unpause()
    client.close()


@pytest.mark.parametrize("background", [True, False])
def test_the_response_does_not_wait_for_a_stalled_broker(stack_env, log_dir, broker, background):
    """Writes to Redis paused: the event is acknowledged at once and its message
    published once the broker takes writes again. With ENQUEUE_IN_BACKGROUND
    off, the response waits for the publish instead."""
    queue = f"publisher-{uuid.uuid4().hex[:8]}"  # no worker consumes it
    env = {
        **stack_env,
        "WEBHOOKS_TEST_QUEUE": queue,
        "WEBHOOKS_TEST_OVERRIDES": json.dumps({"ENQUEUE_IN_BACKGROUND": background}),
    }
    web = stack.gunicorn(env, log_dir, workers=1)
    try:
        event = make_event("invoice.paid")
        broker.client_pause(PAUSE_MS, all=False)  # reads still answer
        assert deliver(f"{web.url}/webhooks/stripe/", event) == 200
        queued = redis_queued_tasks(settings.CELERY_BROKER_URL, queue)
        assert WebhookEvent.objects.filter(pk=event["id"], status="pending").exists()
        if background:
            # Acknowledged and stored while the broker could not take the message.
            assert queued == []
            broker.client_unpause()
            wait_until(
                lambda: redis_queued_tasks(settings.CELERY_BROKER_URL, queue) == [TASK],
                timeout=30,
                message=lambda: f"the message to be published\n{web.log_tail()}",
            )
        else:
            assert queued == [TASK]
        assert "could not enqueue" not in web.log()
    finally:
        web.stop()


HAND_OVER_AND_EXIT = """
import os, sys
import django
django.setup()
import redis
from django.conf import settings
from webhook_worker.publisher import publisher

count = int(sys.argv[1])
# The thread's first publish waits for the broker; the process exits meanwhile.
redis.Redis.from_url(settings.CELERY_BROKER_URL).client_pause(1500, all=False)
for n in range(count):
    publisher.enqueue(f"evt_exit_{n}", "customer.created")
if sys.argv[2] == "fork":
    pid = os.fork()
    if pid == 0:  # the child's own hand-overs, on a thread of its own
        for n in range(count):
            publisher.enqueue(f"evt_child_{n}", "customer.created")
        sys.exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
"""


@pytest.mark.parametrize("fork", ["", "fork"])
def test_what_a_process_handed_over_is_published_before_it_exits(stack_env, broker, fork):
    queue = f"publisher-exit-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [sys.executable, "-c", HAND_OVER_AND_EXIT, "20", fork],
        env={**stack_env, "WEBHOOKS_TEST_QUEUE": queue},
        check=True,
        timeout=60,
    )
    # Read as soon as the process is gone: nothing was left in its queue.
    expected = 40 if fork else 20
    assert redis_queued_tasks(settings.CELERY_BROKER_URL, queue) == [TASK] * expected


def test_eager_celery_runs_the_handlers_before_the_response(client):
    """With task_always_eager (a project's own tests), the publish stays inline."""
    event = make_event("customer.created")
    celery_app.conf.task_always_eager = True
    try:
        assert post_signed(client, event).status_code == 200
    finally:
        celery_app.conf.task_always_eager = False
    assert WebhookEvent.objects.get(pk=event["id"]).status == "succeeded"


HOOKED = """
import django
django.setup()
from celery.signals import before_task_publish
from webhook_worker.publisher import publisher

seen = []
# What an integration (Sentry, OpenTelemetry) does to add its headers.
before_task_publish.connect(lambda **kwargs: seen.append(kwargs["headers"]), weak=False)
for n in range(3):
    publisher.enqueue(f"evt_hooked_{n}", "invoice.paid")
assert publisher.close(30)
print(len(seen), sorted({headers["shadow"] for headers in seen}))
"""


def queued_messages(queue: str) -> list[dict]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        return [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]
    finally:
        client.close()


def run_publishing(stack_env: dict[str, str], script: str, queue: str) -> str:
    """Run `script` in a process of its own, publishing to `queue`; what it printed."""
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**stack_env, "WEBHOOKS_TEST_QUEUE": queue},
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_every_message_goes_through_celerys_publish_and_its_signals(stack_env):
    """The publisher's batches are Celery's own apply_async: receivers of its
    publish signals see every message, and Flower gets the event type."""
    queue = f"publisher-hooked-{uuid.uuid4().hex[:8]}"
    out = run_publishing(stack_env, HOOKED, queue)
    assert out == "3 ['process_event[invoice.paid]']"
    messages = queued_messages(queue)
    assert [m["headers"]["task"] for m in messages] == [TASK] * 3
    assert [json.loads(base64.b64decode(m["body"]))[0] for m in messages] == [
        [f"evt_hooked_{n}"] for n in range(3)
    ]


IN_THEIR_CONTEXTS = """
import contextvars
import django
django.setup()
from celery.signals import before_task_publish
from webhook_worker.publisher import BackgroundPublisher, publisher

# What OpenTelemetry's and Sentry's trace is to their Celery integrations.
request = contextvars.ContextVar("request")
seen = []
before_task_publish.connect(
    lambda body, **kwargs: seen.append((body[0][0], request.get("none"))), weak=False
)

def hand_over(n):
    request.set(f"request {n}")
    publisher.enqueue(f"evt_handed_{n}", "invoice.paid")

for n in range(3):
    contextvars.copy_context().run(hand_over, n)
assert publisher.close(30)

# One batch of three, each in the context its event was handed over in.
batch = []
for n in range(3):
    context = contextvars.copy_context()
    context.run(request.set, f"batched {n}")
    batch.append((f"evt_batched_{n}", "invoice.paid", context))
assert BackgroundPublisher._publish_batch(batch)
print(sorted(seen))
"""


def test_each_message_is_published_in_the_context_its_event_was_handed_over_in(stack_env):
    """So the request's trace (OpenTelemetry, Sentry) goes into its message's headers."""
    queue = f"publisher-context-{uuid.uuid4().hex[:8]}"
    out = run_publishing(stack_env, IN_THEIR_CONTEXTS, queue)
    handed = [(f"evt_handed_{n}", f"request {n}") for n in range(3)]
    batched = [(f"evt_batched_{n}", f"batched {n}") for n in range(3)]
    assert out == str(sorted(handed + batched))

"""Publish "process this event" to the broker. The only entry point ingest uses.

The broker is a wake-up call, not the record: when a publish fails the event
is already in the database, so we mark it due for the sweeper and carry on.

The webhook view does not publish itself: once its INSERT has committed it
hands the event to this process's publisher thread (`hand_over`,
webhook_worker/publisher.py), which publishes whatever has accumulated in one
batch, and the response goes out without waiting for the broker. Everything
else (the sweeper, retries from the admin or `webhooks_retry`) publishes
inline with `enqueue_event`.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from celery import Celery
from django.db import DatabaseError

from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import SWEEP_NOW, WebhookEvent

logger = logging.getLogger(__name__)

# Publishing happens inside the webhook request: one quick retry for a
# dropped pooled connection, then give up and let the sweeper publish later.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.1,
}


def enqueue_event(
    event_id: str,
    event_type: str,
    trigger: str = "delivery",
    countdown: float | None = None,
) -> bool:
    """Ask a worker to process the event; False (and logged) if the broker is unreachable."""
    try:
        _publish(event_id, event_type, trigger, countdown)
    except Exception as exc:  # any broker/transport failure: the row is safe
        logger.warning(
            "could not enqueue event %s (%s: %s); the sweeper will enqueue it",
            event_id, type(exc).__name__, exc,
        )  # fmt: skip
        mark_for_sweep([event_id])
        return False
    return True


def _publish(
    event_id: str,
    event_type: str,
    trigger: str = "delivery",
    countdown: float | None = None,
    producer: Any = None,
) -> None:
    from .tasks import process_event

    args = (event_id,)
    kwargs = {"trigger": trigger, "event_type": event_type}
    options: dict[str, Any] = {
        "retry": True,
        "retry_policy": PUBLISH_RETRY_POLICY,
        # What Flower shows: for these plain strings repr() gives what
        # Celery's saferepr() would, at a fraction of its cost.
        "argsrepr": repr(args),
        "kwargsrepr": repr(kwargs),
    }
    if countdown is not None:
        options["countdown"] = countdown
    if not _publish_declares_queue(process_event.app):
        options["declare"] = []
    if producer is not None:
        options["producer"] = producer
    process_event.apply_async(args=args, kwargs=kwargs, **options)


def hand_over(event_id: str, event_type: str) -> None:
    """Enqueue a just-committed event without making the caller wait for the broker.

    Inline instead when `ENQUEUE_IN_BACKGROUND` is off, or when Celery runs
    tasks eagerly (tests that expect the task to have run on return).
    """
    from .tasks import process_event

    if not webhook_settings.ENQUEUE_IN_BACKGROUND or process_event.app.conf.task_always_eager:
        enqueue_event(event_id, event_type)
        return
    from .publisher import publisher

    publisher.submit(event_id, event_type)


@cache
def _publish_declares_queue(app: Celery) -> bool:
    """Whether a publish must declare its queue first; False only where nothing depends on it.

    Celery declares the task's queue with every publish, and kombu, to find
    the declaration in its per-connection cache, first copies the queue, its
    exchange and bindings: about a tenth of a publish's CPU. On Redis, with
    Celery's default direct routing, a publish is a push onto the queue's
    list, which creates it, and the worker declares the queues it consumes,
    so the declaration does nothing a message needs. Anywhere else (RabbitMQ
    drops a message for a queue nobody declared; routes or exchanges of the
    project's own) every publish declares, as Celery does.
    """
    conf = app.conf
    if conf.task_routes or conf.task_queues or conf.task_default_exchange_type != "direct":
        return True
    with app.connection_for_write() as conn:
        return conn.transport.driver_type != "redis"


def mark_for_sweep(event_ids: list[str]) -> None:
    """Make the sweeper's next run pick these events up instead of waiting REQUEUE_AFTER."""
    try:
        WebhookEvent.objects.filter(pk__in=event_ids, status__in=WebhookEvent.UNFINISHED).update(
            due_at=SWEEP_NOW
        )
    except DatabaseError:
        logger.exception("could not mark events for the sweeper: %s", event_ids[:10])
